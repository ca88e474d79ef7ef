"""What becomes of a replica's runs when it stops heartbeating: the same rule on every backend.

A run belongs to the replica that claimed it (its workspace and containers are on that machine).
While the replica heartbeats, or comes back within the TTL, it goes on with them. Past the TTL the
others give up on it: a run whose agent had not started is queued again, once, for any replica;
one whose agent ran fails with the reason, and ``/retry`` runs it again on a live replica.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from bot.store.model import ACTIVE, Replica, Run

LOST_RUNNING = "replica {} was lost while the agent ran"
LOST_QUEUED = "replica {} was lost before the agent started: queued again"


class _Store(Protocol):
    async def mark_lost(self, ttl: float, now: float) -> list[str]: ...
    async def replicas(self) -> list[Replica]: ...
    async def runs(self, *, states: Any = None) -> list[Run]: ...
    async def transition(self, run_id: int, to: str, **kw: Any) -> Run | None: ...


class ReplicaRules:
    async def reclaim_lost(self: _Store, ttl: float, now: float | None = None) -> list[Run]:
        """Give up on replicas silent for ``ttl`` seconds, and on their runs; the runs changed.

        Safe on several replicas at once and after a crash half-way: a replica is marked lost once,
        each run moves only from the state it was read in, and the requeue happens once per run.
        """
        now = time.time() if now is None else now
        await self.mark_lost(ttl, now)
        lost = {r.id for r in await self.replicas() if r.lost_at is not None}
        changed = []
        for run in await self.runs(states=ACTIVE):
            if run.replica not in lost:
                continue
            if run.state == "preparing" and not run.container_id:
                moved = await self.transition(
                    run.id, "queued", reason=LOST_QUEUED.format(run.replica), expect=("preparing",),
                    trigger_key=f"requeue-lost:{run.id}", replica="",
                )
                if moved is not None:
                    changed.append(moved)
                    continue
            moved = await self.transition(
                run.id, "failed", reason=LOST_RUNNING.format(run.replica), expect=(run.state,)
            )
            if moved is not None:
                changed.append(moved)
        return changed
