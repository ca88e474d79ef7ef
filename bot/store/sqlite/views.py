"""Reads for the dashboard, the metrics and the operator's views: queries over what the store
keeps, apart from the writes and the workers' queries in ``store.py``. Mixed into ``SqliteStore``,
whose lock and connection they share."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

import aiosqlite

from bot.store.model import LIVE, TERMINAL, Census, Run, RunEvent, StateChange
from bot.store.sqlite.rows import COLUMN_FACETS, marks


class Views:
    _db: aiosqlite.Connection
    _lock: asyncio.Lock

    async def _all(self, sql: str, args: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, tuple(args)))  # one trip to the thread

    async def history(self, run_id: int) -> list[StateChange]:
        """Every state change of a run, oldest first."""
        found = await self._all(
            "SELECT id, run_id, from_state, to_state, reason, at FROM transitions WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [StateChange(*r) for r in found]

    async def queued(self, limit: int) -> list[Run]:
        """The head of the queue, in order."""
        found = await self._all("SELECT * FROM runs WHERE state = 'queued' ORDER BY id LIMIT ?", (limit,))
        return [Run.from_row(r) for r in found]

    async def reported_facets(self, run_ids: Iterable[int], facets: Iterable[str]) -> dict[int, dict[str, Any]]:
        """Some facets of what the reporter stored for each of several runs, in one query."""
        ids, names = tuple(run_ids), tuple(facets)
        assert not set(names) & set(COLUMN_FACETS), names
        found = await self._all(
            f"SELECT run_id, facet, value FROM reported WHERE run_id IN ({marks(ids)}) AND facet IN ({marks(names)})",
            (*ids, *names),
        )
        facets_of: dict[int, dict[str, Any]] = {}
        for r in found:
            facets_of.setdefault(r["run_id"], {})[r["facet"]] = json.loads(r["value"])
        return facets_of

    async def recent_ended(self, limit: int) -> list[Run]:
        """The runs that most recently reached an outcome, newest first."""
        found = await self._all(
            f"SELECT * FROM runs WHERE state IN ({marks(TERMINAL)}) ORDER BY ended_at DESC, id DESC LIMIT ?",
            (*TERMINAL, limit),
        )
        return [Run.from_row(r) for r in found]

    async def census(self) -> Census:
        """Live runs per pool and state, and the backlogs: what the metrics report as gauges."""
        async with self._lock:
            live = await self._db.execute_fetchall(
                f"SELECT pool, state, COUNT(*) FROM runs WHERE state IN ({marks(LIVE)}) GROUP BY pool, state", LIVE
            )
            outbox = await self._db.execute_fetchall("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL")
            deliveries = await self._db.execute_fetchall("SELECT COUNT(*) FROM deliveries WHERE handled_at IS NULL")
        return Census({(pool, state): n for pool, state, n in live}, outbox[0][0], deliveries[0][0])

    async def last_transition(self) -> tuple[float, int]:
        """``(at, id)`` of the newest state change, ``(0, 0)`` when there is none."""
        found = await self._all("SELECT at, id FROM transitions ORDER BY id DESC LIMIT 1")
        return (found[0]["at"], found[0]["id"]) if found else (0.0, 0)

    async def transitions_after(self, after: tuple[float, int], limit: int) -> list[RunEvent]:
        """State changes after ``after`` (the ``(at, id)`` of the last one read), oldest first.

        Ids alone are not enough: compaction deletes old runs' transitions, and SQLite numbers a
        new row after the highest one left, so an id can come back. While the last one read is
        still there every newer change has a higher id; once it is gone they are found by time.
        Each change carries what the metrics need as of that change, so a late reader counts a
        run that has since gone on (blocked, answered, started again) like an early one.
        """
        at, last_id = after
        kept = not last_id or await self._all("SELECT 1 FROM transitions WHERE id = ? AND at = ?", (last_id, at))
        if kept:
            where, order, args = "t.id > ?", "t.id", (last_id,)
        else:
            where, order, args = "(t.at, t.id) > (?, ?)", "t.at, t.id", after
        found = await self._all(
            "SELECT t.id, t.to_state, t.at, r.agent,"
            " NOT EXISTS (SELECT 1 FROM transitions p WHERE p.run_id = t.run_id AND p.id < t.id"
            "             AND p.to_state = 'running'),"
            " (SELECT MAX(p.at) FROM transitions p WHERE p.run_id = t.run_id AND p.id < t.id"
            "  AND p.to_state = 'running'),"
            " COALESCE((SELECT MIN(d.received_at) FROM triggers g JOIN deliveries d ON d.id = g.delivery_id"
            "           WHERE g.run_id = t.run_id), r.created_at)"
            f" FROM transitions t JOIN runs r ON r.id = t.run_id WHERE {where} ORDER BY {order} LIMIT ?",
            (*args, limit),
        )
        return [RunEvent(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in found]
