"""Replicas and leases in SQLite (one replica, but the same interface as PostgreSQL's)."""

from __future__ import annotations

import time

from bot.store.model import Replica
from bot.store.sqlite.rows import Session
from bot.store.sqlite.views import Views


class Replicas(Views):
    _tx: Session

    async def heartbeat(self, replica: str, host: str, max_running: int, now: float | None = None) -> None:
        """This replica is alive (again: a replica given up on that comes back is no longer lost)."""
        now = time.time() if now is None else now
        async with self._tx("replicas") as db:
            await db.execute(
                "INSERT INTO replicas (id, host, started_at, seen_at, max_running) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET host = excluded.host, seen_at = excluded.seen_at,"
                " max_running = excluded.max_running, lost_at = NULL",
                (replica, host, now, now, max_running),
            )

    async def replicas(self) -> list[Replica]:
        return [Replica(*r) for r in await self._all(
            "SELECT id, host, started_at, seen_at, max_running, lost_at FROM replicas ORDER BY id"
        )]

    async def mark_lost(self, ttl: float, now: float) -> list[str]:
        """Mark the replicas silent for ``ttl`` seconds lost; which ones became so now."""
        async with self._tx("replicas") as db:
            found = await db.execute_fetchall(
                "UPDATE replicas SET lost_at = ? WHERE lost_at IS NULL AND seen_at < ? RETURNING id", (now, now - ttl)
            )
        return [r[0] for r in found]

    async def take_lease(self, name: str, holder: str, ttl: float, now: float | None = None) -> bool:
        """Hold ``name`` for ``ttl`` seconds (again, if ``holder`` holds it); False if another does."""
        now = time.time() if now is None else now
        async with self._tx("leases") as db:
            cur = await db.execute(
                "INSERT INTO leases (name, holder, until) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET holder = excluded.holder, until = excluded.until"
                " WHERE leases.holder = excluded.holder OR leases.until < ?",
                (name, holder, now + ttl, now),
            )
            return cur.rowcount == 1

    async def drop_lease(self, name: str, holder: str) -> None:
        async with self._tx("leases") as db:
            await db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))
