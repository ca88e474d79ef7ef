"""One reporter per thing the Forge shows of a run, after Prow's crier ``ReportClient``.

Each has a ``name``, a ``should_report`` (from the run and what was last shown, no Forge call) and a
``report`` that writes the Forge and remembers what it showed under its own keys. ``Reporter.report``
runs them in order: the review and the pull request first, so the status comment can link them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from bot.store import pools
from bot.forge.client import Forge, ForgeError
from bot.forge.paths import Repo
from bot.report import publish, sentences, stopwatch
from bot.report.labels import Labels
from bot.report.links import links
from bot.report.shown import Progress, Pull, Shown, Spell, remember
from bot.settings import Settings
from bot.store import AT_WORK, Run, Store, Usage
from bot.usage import budgets

log = logging.getLogger(__name__)


class Facet(Protocol):
    name: str

    def should_report(self, run: Run, shown: Shown) -> bool: ...

    async def report(self, run: Run, shown: Shown) -> None: ...


class Review:
    """A review run's findings, posted once on the pull request."""

    name = "review"

    def __init__(self, forge: Forge, store: Store, login: Callable[[], Awaitable[str]]) -> None:
        self.forge, self.store, self.login = forge, store, login

    def should_report(self, run: Run, shown: Shown) -> bool:
        return run.state == "completed" and run.review and shown.review is None

    async def report(self, run: Run, shown: Shown) -> None:
        review = await publish.post_review(self.forge, run, await self.login())
        await remember(self.store, run.id, shown, review=review["id"])


class PullRequest:
    """The pull request of a run that pushed a new branch, opened once."""

    name = "pull"

    def __init__(self, forge: Forge, store: Store) -> None:
        self.forge, self.store = forge, store

    def should_report(self, run: Run, shown: Shown) -> bool:
        proposes = not run.is_pull or run.options.get("own_branch")  # its branch is no pull request's head
        return (run.state == "completed" and not run.review and bool(proposes) and run.result.pushed
                and shown.pull is None)

    async def report(self, run: Run, shown: Shown) -> None:
        pull = await publish.open_pull(self.forge, run, shown.comment_url, await self.store.usage(run.id))
        await remember(self.store, run.id, shown,
                       pull=Pull(pull["number"], pull.get("html_url") or pull.get("url", "")))


class Stopwatch:
    """Started while the agent works, stopped once for each spell of work (keyed by its
    ``started_at``). A spell is stopped even if no start was seen to succeed: a start whose answer
    was lost may have run, and a run first seen ended had none; stop answers 409 then, and what the
    stopwatch missed is booked either way."""

    name = "stopwatch"

    def __init__(self, forge: Forge, store: Store, login: Callable[[], Awaitable[str]]) -> None:
        self.forge, self.store, self.login = forge, store, login

    def should_report(self, run: Run, shown: Shown) -> bool:
        if run.on_ref or shown.stopwatch == stopwatch.DISABLED:
            return False
        if run.state in AT_WORK:
            return shown.stopwatch != Spell("started", run.started_at)
        return run.state != "queued" and bool(run.started_at) and shown.stopwatch != Spell("stopped", run.started_at)

    async def report(self, run: Run, shown: Shown) -> None:
        if run.state in AT_WORK:
            done = await stopwatch.start(self.forge, run)
        else:
            done = await stopwatch.stop(self.forge, run, await self.login())
        await remember(self.store, run.id, shown,
                       stopwatch=done if done == stopwatch.DISABLED else Spell(done, run.started_at))


class StatusComment:
    """The run's one sticky status comment, found by its hidden marker and edited in place, posted
    again if deleted.

    While the agent works it shows the run's progress (time, model calls, tokens, cost, last
    actions), edited only when more than the clock moved and at most every ``progress_interval``
    seconds, so a long run costs the Forge a few calls a minute; a change of state is shown at once.
    ``due`` holds the runs whose new progress is held back, and when it may be shown: the reporter
    comes back to them then.
    """

    name = "comment"

    def __init__(self, settings: Settings, forge: Forge, store: Store, login: Callable[[], Awaitable[str]]) -> None:
        self.settings, self.forge, self.store, self.login = settings, forge, store, login
        self.due: dict[int, float] = {}

    def should_report(self, run: Run, shown: Shown) -> bool:
        return not run.on_ref  # whether the text changed is known once it is written out

    async def report(self, run: Run, shown: Shown) -> None:
        usage, now = await self.store.usage(run.id), time.time()
        was = shown.progress
        if run.state in AT_WORK and was is not None and was.state == run.state:
            if await self.body(run, shown, usage=usage, now=was.at) == shown.comment_body:
                return  # only the clock moved
            if (allowed := was.at + self.settings.progress_interval) > now:
                self.due[run.id] = allowed
                return
        await self.show(run, shown, await self.body(run, shown, usage=usage, now=now))
        if run.state in AT_WORK:
            await remember(self.store, run.id, shown, progress=Progress(run.state, now))

    async def body(
        self, run: Run, shown: Shown, asked: str = "", *, usage: Usage | None = None, now: float | None = None
    ) -> str:
        """The comment's text; its progress as of ``now`` (default: now)."""
        found = links(run, shown, self.settings.forge_url)
        return sentences.status_comment(
            run, queue=await self._queue_line(run),
            links=sentences.run_links(run, found, shown.pull.number if shown.pull else None),
            note=sentences.TIME_TRACKING_OFF if shown.stopwatch == stopwatch.DISABLED else "", asked=asked,
            usage=usage if usage is not None else await self.store.usage(run.id),
            now=time.time() if now is None else now,
        )

    async def show(self, run: Run, shown: Shown, body: str) -> None:
        """Edit the comment in place; post it (again) when there is none (any more)."""
        if shown.comment_body == body:
            return
        repo = Repo(run.owner, run.repo)
        if shown.comment_id is not None:
            try:
                await self.forge.patch(repo.comment(shown.comment_id), {"body": body})
            except ForgeError as e:
                if e.status != 404:
                    raise
                log.info("run %s: its status comment was deleted; posting it again", run.id)
            else:
                await remember(self.store, run.id, shown, comment_body=body)
                return
        # Posted by an earlier attempt whose answer was lost? (A deleted one is no longer listed.)
        marker = sentences.marker("run", str(run.id))
        found = await find_comment(self.forge, repo.comments(run.number), marker, await self.login())
        if found is None:
            found = await self.forge.post(repo.comments(run.number), {"body": body})
        await remember(self.store, run.id, shown, comment_id=found["id"], comment_url=found.get("html_url", ""))
        if found.get("body") != body:
            await self.forge.patch(repo.comment(found["id"]), {"body": body})
        await remember(self.store, run.id, shown, comment_body=body)

    async def _queue_line(self, run: Run) -> str:
        if run.state != "queued":
            return ""
        pool = await self.store.pool(run.pool)
        return sentences.queue_line(
            frozen=await pools.bot_frozen(self.settings, self.store), pool=run.pool, paused_until=pool.paused_until,
            position=await self.store.queue_position(run.id), limit=pools.limit(self.settings, run.pool),
            daily=await budgets.hold_line(self.settings, self.store, run, time.time()),
        )


class StateLabel:
    """Exactly one of the configured state labels on the issue: the one of the run's state."""

    name = "state_label"

    def __init__(self, settings: Settings, forge: Forge, store: Store, labels: Labels) -> None:
        self.settings, self.forge, self.store, self.labels = settings, forge, store, labels

    def _want(self, run: Run) -> str:
        names = self.settings.labels.model_dump()
        return names.get(run.state) or names["running"]

    def should_report(self, run: Run, shown: Shown) -> bool:
        return not run.on_ref and shown.state_label != self._want(run)

    async def report(self, run: Run, shown: Shown) -> None:
        want = self._want(run)
        repo = Repo(run.owner, run.repo)
        path = repo.issue_labels(run.number)
        # Adding answers with the issue's full label set: the stale state labels are in it.
        current = await self.forge.post(path, {"labels": [await self.labels.id(repo, want)]})
        if not any(label["name"] == want for label in current or []):  # Gitea drops an id deleted since
            self.labels.forget(repo)
            current = await self.forge.post(path, {"labels": [await self.labels.id(repo, want)]})
        stale = set(self.settings.labels.model_dump().values()) - {want}
        for label in current or []:
            if label["name"] in stale:
                await self.labels.remove(repo, run.number, label["id"])
        await remember(self.store, run.id, shown, state_label=want)


class CommitStatus:
    """The run's state as a commit status on the pull request's head, or on the ref it ran on."""

    name = "status"

    def __init__(self, forge: Forge, store: Store) -> None:
        self.forge, self.store = forge, store

    @staticmethod
    def _sha(run: Run) -> str:
        return run.head_sha if run.is_pull else run.options.get("ref_sha", "")

    def should_report(self, run: Run, shown: Shown) -> bool:
        sha = self._sha(run)
        return bool(sha) and shown.status != (sha, run.state)

    async def report(self, run: Run, shown: Shown) -> None:
        sha = self._sha(run)
        await publish.set_status(self.forge, run, sha, shown.comment_url)
        await remember(self.store, run.id, shown, status=(sha, run.state))


async def find_comment(forge: Forge, path: str, marker: str, bot: str) -> dict | None:
    """The comment by ``bot`` carrying ``marker``: anyone can write a marker, only the bot's account
    counts (run ids are sequential, so an outsider could post the next one first)."""
    for comment in await forge.getitem(path) or []:
        if marker in comment.get("body", "") and (comment.get("user") or {}).get("login") == bot:
            return comment
    return None
