"""SQL steps the PostgreSQL store's methods share, each run inside a transaction the caller holds."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from bot.store.model import OutboxItem, PoolState, Run, encode_run_changes

# Keys of transaction-scoped advisory locks (``pg_advisory_xact_lock(class, key)``): what must be
# decided by one transaction at a time in the whole cluster. A claim takes the one lock of its class;
# a request for an issue and a branch assignment lock their issue or repository only.
CLAIM, ISSUE, BRANCHES = 1, 2, 3


class Tx:
    """One transaction's connection, noting whether any statement changed a row (a transaction that
    changed nothing wakes nobody)."""

    def __init__(self, db: asyncpg.Connection) -> None:
        self.db = db
        self.changed = False

    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; how many rows it inserted, updated or deleted."""
        words = (await self.db.execute(sql, *args)).split()
        count = int(words[-1]) if words[0] in ("INSERT", "UPDATE", "DELETE") else 0
        self.changed |= count > 0
        return count

    async def returning(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """Run a changing statement with ``RETURNING``; the rows it changed."""
        found = await self.db.fetch(sql, *args)
        self.changed |= bool(found)
        return found

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.db.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.db.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.db.fetchval(sql, *args)

    async def lock(self, kind: int, key: str = "") -> None:
        """Hold a cluster-wide lock on ``(kind, key)`` until this transaction ends."""
        await self.db.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", kind, key)


async def get_run(tx: Tx, run_id: int, *, lock: bool = False) -> Run | None:
    """A run; with ``lock``, its row is locked until the transaction ends (so its state cannot
    change under a decision taken on it)."""
    row = await tx.fetchrow(f"SELECT * FROM runs WHERE id = $1{' FOR UPDATE' if lock else ''}", run_id)
    return Run.from_row(row) if row else None


async def update_run(tx: Tx, run_id: int, changes: dict[str, Any]) -> None:
    """Change columns of a run; every change is a new version, which the reporter shows."""
    changes = encode_run_changes(changes)
    assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(changes, start=2))
    await tx.execute(
        f"UPDATE runs SET {assignments}, version = version + 1 WHERE id = $1", run_id, *changes.values()
    )


async def log_transition(tx: Tx, run_id: int, from_state: str | None, to_state: str, reason: str, at: float) -> None:
    await tx.execute(
        "INSERT INTO transitions (run_id, from_state, to_state, reason, at) VALUES ($1, $2, $3, $4, $5)",
        run_id, from_state, to_state, reason, at,
    )


async def claim_trigger(tx: Tx, key: str, delivery_id: str, at: float) -> bool:
    """Remember that ``key`` caused an effect at ``at``; False if it already did (a redelivery). Two
    transactions inserting one key at once: the second waits for the first, then finds it."""
    return await tx.execute(
        "INSERT INTO triggers (key, delivery_id, created_at) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
        key, delivery_id, at,
    ) == 1


async def trigger(tx: Tx, key: str) -> asyncpg.Record | None:
    """A claimed trigger's row: when it was claimed and the run it queued, if any."""
    return await tx.fetchrow("SELECT created_at, run_id FROM triggers WHERE key = $1", key)


def pool_state(r: asyncpg.Record) -> PoolState:
    return PoolState(r["name"], r["frozen"], r["paused_until"], r["quick_failures"], r["last_spawn_at"])


def outbox_item(r: asyncpg.Record) -> OutboxItem:
    return OutboxItem(
        r["id"], r["key"], r["kind"], r["owner"], r["repo"], r["number"], json.loads(r["payload"]), r["run_id"],
        r["attempts"],
    )
