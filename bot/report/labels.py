"""Labels on the Forge by name: each repository's label ids, listed once and created when missing.

Gitea takes a second label of a name a repository already has, so a name is created by one
creator at a time in the whole cluster: one task per repository in a process (a lock), one
replica at a time across replicas (the store's lease on the repository's labels), each listing
the labels again once it holds both.
"""

from __future__ import annotations

import asyncio

from bot.forge.client import Forge, ForgeError
from bot.forge.paths import Repo
from bot.store import Store
from bot.store.leases import exclusive

COLOR = "#5319e7"
LEASE_WAIT = 0.2  # seconds between looks while another replica creates a repository's labels


class Labels:
    def __init__(self, forge: Forge, store: Store, replica: str) -> None:
        self.forge, self.store, self.replica = forge, store, replica
        self._ids: dict[Repo, dict[str, int]] = {}  # refreshed when a name is missing
        self._locks: dict[Repo, asyncio.Lock] = {}  # per repository: one lists or creates its labels

    async def id(self, repo: Repo, name: str) -> int:
        """The repository's id for a label, created when missing, never twice."""
        async with self._locks.setdefault(repo, asyncio.Lock()):
            if name in self._ids.get(repo, {}):
                return self._ids[repo][name]
            while True:
                async with exclusive(self.store, [f"labels:{repo.owner}/{repo.name}"], self.replica) as held:
                    if held:
                        ids = self._ids[repo] = {label["name"]: label["id"]
                                                 async for label in self.forge.getiter(repo.labels())}
                        if name not in ids:
                            created = await self.forge.post(repo.labels(), {"name": name, "color": COLOR})
                            ids[name] = created["id"]
                        return ids[name]
                await asyncio.sleep(LEASE_WAIT)  # another replica lists or creates them now

    def forget(self, repo: Repo) -> None:
        """The listing is stale (Gitea dropped an id deleted since): list again next time."""
        self._ids.pop(repo, None)

    async def remove(self, repo: Repo, number: int, label_id: int) -> None:
        try:
            await self.forge.delete(repo.issue_label(number, label_id))
        except ForgeError as e:
            if e.status not in (404, 422):  # gone already: an earlier attempt (or someone) removed it
                raise
