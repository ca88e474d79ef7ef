"""Replicas and leases in PostgreSQL: heartbeats, who is lost, and cluster-wide leases."""

from __future__ import annotations

import time

from bot.store.model import Replica
from bot.store.postgres.views import Views


class Replicas(Views):
    async def heartbeat(self, replica: str, host: str, max_running: int, now: float | None = None) -> None:
        """This replica is alive (again: a replica given up on that comes back is no longer lost)."""
        now = time.time() if now is None else now
        await self._c.write(lambda tx: tx.execute(
            "INSERT INTO replicas (id, host, started_at, seen_at, max_running) VALUES ($1, $2, $3, $3, $4)"
            " ON CONFLICT (id) DO UPDATE SET host = excluded.host, seen_at = excluded.seen_at,"
            " max_running = excluded.max_running, lost_at = NULL",
            replica, host, now, max_running,
        ), "replicas", single=True)

    async def replicas(self) -> list[Replica]:
        return [Replica(*r) for r in await self._c.read(
            "SELECT id, host, started_at, seen_at, max_running, lost_at FROM replicas ORDER BY id"
        )]

    async def mark_lost(self, ttl: float, now: float) -> list[str]:
        """Mark the replicas silent for ``ttl`` seconds lost; which ones became so now (each is
        marked by one caller only, however many ask at once)."""
        found = await self._c.write(lambda tx: tx.returning(
            "UPDATE replicas SET lost_at = $1 WHERE lost_at IS NULL AND seen_at < $2 RETURNING id", now, now - ttl
        ), "replicas")
        return [r[0] for r in found]

    async def take_lease(self, name: str, holder: str, ttl: float, now: float | None = None) -> bool:
        """Hold ``name`` for ``ttl`` seconds (again, if ``holder`` holds it); False if another does."""
        now = time.time() if now is None else now
        return await self._c.write(lambda tx: tx.execute(
            "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE"
            " SET holder = excluded.holder, until = excluded.until"
            " WHERE leases.holder = excluded.holder OR leases.until < $4",
            name, holder, now + ttl, now,
        ), "leases", single=True) == 1

    async def drop_lease(self, name: str, holder: str) -> None:
        await self._c.write(lambda tx: tx.execute(
            "DELETE FROM leases WHERE name = $1 AND holder = $2", name, holder
        ), "leases", single=True)
