"""SQL steps the store's methods share, each run inside a transaction the caller holds."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiosqlite

from bot.store.model import OutboxItem, PoolState, Run, encode_run_changes, move_changes

# The store's transaction helper as its parts get it: ``session("deliveries", atomic=False)``
# holds the connection for statements that each commit alone, and tells subscribers once they did.
Session = Callable[..., AbstractAsyncContextManager[aiosqlite.Connection]]


def marks(values: Iterable[Any]) -> str:
    """One ``?`` per value, for ``IN (...)`` and ``VALUES (...)``."""
    return ", ".join("?" for _ in values)


async def get_run(db: aiosqlite.Connection, run_id: int) -> Run | None:
    row = await (await db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))).fetchone()
    return Run.from_row(row) if row else None


async def update_run(db: aiosqlite.Connection, run_id: int, changes: dict[str, Any]) -> None:
    """Change columns of a run; every change is a new version, which the reporter shows."""
    changes = encode_run_changes(changes)
    assignments = ", ".join(f"{column} = ?" for column in changes)
    await db.execute(f"UPDATE runs SET {assignments}, version = version + 1 WHERE id = ?", (*changes.values(), run_id))


async def log_transition(
    db: aiosqlite.Connection, run_id: int, from_state: str | None, to_state: str, reason: str, at: float
) -> None:
    await db.execute(
        "INSERT INTO transitions (run_id, from_state, to_state, reason, at) VALUES (?, ?, ?, ?, ?)",
        (run_id, from_state, to_state, reason, at),
    )


async def claim_trigger(db: aiosqlite.Connection, key: str, delivery_id: str) -> bool:
    """Remember that ``key`` caused an effect; False if it already did (a redelivery)."""
    cur = await db.execute(
        "INSERT OR IGNORE INTO triggers (key, delivery_id, created_at) VALUES (?, ?, ?)",
        (key, delivery_id, time.time()),
    )
    return cur.rowcount == 1


async def pools(db: aiosqlite.Connection) -> list[PoolState]:
    rows = await (await db.execute("SELECT * FROM pools ORDER BY name")).fetchall()
    return [
        PoolState(
            r["name"], None if r["frozen"] is None else bool(r["frozen"]),
            r["paused_until"], r["quick_failures"], r["last_spawn_at"],
        )
        for r in rows
    ]


async def flag(db: aiosqlite.Connection, key: str) -> str | None:
    row = await (await db.execute("SELECT value FROM flags WHERE key = ?", (key,))).fetchone()
    return row["value"] if row else None


def outbox_item(r: aiosqlite.Row) -> OutboxItem:
    return OutboxItem(
        r["id"], r["key"], r["kind"], r["owner"], r["repo"], r["number"], json.loads(r["payload"]), r["run_id"],
        r["attempts"],
    )


async def move_run(db: aiosqlite.Connection, run: Run, to: str, reason: str, changes: dict[str, Any]) -> Run:
    """Move ``run`` to ``to`` with ``changes``, and log the transition."""
    now = time.time()
    await update_run(db, run.id, move_changes(to, reason, changes, now))
    await log_transition(db, run.id, run.state, to, reason, now)
    return await get_run(db, run.id)
