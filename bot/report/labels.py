"""Labels on the Forge by name: each repository's label ids, listed once and created when missing."""

from __future__ import annotations

import asyncio

from bot.forge.client import Forge, ForgeError
from bot.forge.paths import Repo

COLOR = "#5319e7"


class Labels:
    def __init__(self, forge: Forge) -> None:
        self.forge = forge
        self._ids: dict[Repo, dict[str, int]] = {}  # refreshed when a name is missing
        self._locks: dict[Repo, asyncio.Lock] = {}  # per repository: one lists or creates its labels

    async def id(self, repo: Repo, name: str) -> int:
        """The repository's id for a label, created when missing. One at a time per repository, so
        two runs never create the same label."""
        async with self._locks.setdefault(repo, asyncio.Lock()):
            ids = self._ids.get(repo)
            if ids is None or name not in ids:
                ids = self._ids[repo] = {label["name"]: label["id"] async for label in self.forge.getiter(repo.labels())}
            if name not in ids:
                created = await self.forge.post(repo.labels(), {"name": name, "color": COLOR})
                ids[name] = created["id"]
            return ids[name]

    def forget(self, repo: Repo) -> None:
        """The listing is stale (Gitea dropped an id deleted since): list again next time."""
        self._ids.pop(repo, None)

    async def remove(self, repo: Repo, number: int, label_id: int) -> None:
        try:
            await self.forge.delete(repo.issue_label(number, label_id))
        except ForgeError as e:
            if e.status not in (404, 422):  # gone already: an earlier attempt (or someone) removed it
                raise
