"""The replicas as an operator sees them: one answer for the admin API, the dashboard, the metrics
and ``/healthz``, read from the shared store, so every replica shows the whole cluster."""

from __future__ import annotations

import time

from pydantic import BaseModel

from bot.settings import Settings
from bot.store import ACTIVE, Store


class ReplicaView(BaseModel):
    id: str
    host: str
    started_at: float
    seen_at: float  # its last heartbeat
    alive: bool  # heard from within the TTL and not given up on
    lost_at: float | None  # when the others gave up on it (its runs failed or queued again)
    max_running: int  # its own machine's limit, as its last heartbeat said
    runs: list[int]  # the ids of its active runs (their workspaces and containers are on its machine)
    this: bool  # the replica that answers


class ReplicasView(BaseModel):
    ttl: float
    max_running: int  # the cluster's, all replicas together
    replicas: list[ReplicaView]

    @property
    def alive(self) -> int:
        return sum(r.alive for r in self.replicas)


async def replicas_view(settings: Settings, store: Store, this: str) -> ReplicasView:
    """Every replica that ever heartbeat in this store, with its active runs."""
    now, ttl = time.time(), settings.replica.ttl
    runs: dict[str, list[int]] = {}
    for run in await store.runs(states=ACTIVE):
        runs.setdefault(run.replica, []).append(run.id)
    views = [
        ReplicaView(
            id=r.id, host=r.host, started_at=r.started_at, seen_at=r.seen_at,
            alive=r.lost_at is None and now - r.seen_at <= ttl, lost_at=r.lost_at, max_running=r.max_running,
            runs=runs.get(r.id, []), this=r.id == this,
        )
        for r in await store.replicas()
    ]
    return ReplicasView(ttl=ttl, max_running=settings.max_running, replicas=views)
