"""The outbox: one-off writes queued by handlers (replies, reactions, removing a trigger label,
``/status`` refreshes), each delivered once per key.

A reply that may have been posted before a failure is looked for by its marker before posting again.
"""

from __future__ import annotations

import time

from bot.forge.client import Forge
from bot.forge.paths import Repo
from bot.report import sentences
from bot.report.facets import StatusComment, find_comment
from bot.report.labels import Labels
from bot.report.shown import shown
from bot.store import OutboxItem, Store


class Outbox:
    def __init__(self, store: Store, forge: Forge, labels: Labels, comment: StatusComment) -> None:
        self.store, self.forge, self.labels, self.comment = store, forge, labels, comment
        self._writers = {"comment": self._comment, "reaction": self._reaction, "unlabel": self._unlabel,
                         "status": self._status}

    async def write(self, item: OutboxItem) -> None:
        """Write one item to the Forge; raises ``ForgeError`` as the Forge answered."""
        await self._writers[item.kind](item)

    async def _comment(self, item: OutboxItem) -> None:
        body = item.payload["body"]
        path = Repo(item.owner, item.repo).comments(item.number)
        if item.attempts and await find_comment(self.forge, path, body.rsplit("\n", 1)[-1]):
            return  # an earlier attempt did post it
        await self.forge.post(path, {"body": body})

    async def _reaction(self, item: OutboxItem) -> None:
        await self.forge.post(
            Repo(item.owner, item.repo).reactions(item.payload["comment_id"]),
            {"content": item.payload["content"]},
        )

    async def _unlabel(self, item: OutboxItem) -> None:
        await self.labels.remove(Repo(item.owner, item.repo), item.number, item.payload["label_id"])

    async def _status(self, item: OutboxItem) -> None:
        """A user's ``/status``: the run's comment shown afresh, saying whom it answers, or posted
        again when a maintainer deleted it; always a visible change, even for a finished run."""
        run = await self.store.get(item.run_id)
        if run is None:
            return
        was = await shown(self.store, run.id)
        asked = sentences.status_asked(item.payload["login"], time.time())
        was.comment_body = None  # asked for: written even when nothing else changed
        await self.comment.show(run, was, await self.comment.body(run, was, asked))
