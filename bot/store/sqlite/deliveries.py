"""Deliveries in SQLite: the group commit that records them before they are acknowledged.

Deliveries that arrive together are written with one statement (group commit): each caller
still returns only once its row is committed, but a burst costs one trip to the database thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from bot.store.sqlite.rows import Session, marks

MAX_BATCH = 500  # deliveries written in one transaction at most
OUTCOME_DELAY = 0.1  # seconds outcomes of handled deliveries may wait behind arrivals


class DeliveryWriter:
    def __init__(self, session: Session) -> None:
        self._session = session
        self._arrivals: list[tuple[str, str, bytes, float, asyncio.Future[bool]]] = []
        self._finished: list[tuple[str, str | None, float, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._outcomes_due = 0.0

    async def close(self) -> None:
        if self._task:
            await asyncio.gather(self._task, return_exceptions=True)

    async def record(self, delivery_id: str, event_type: str, body: bytes) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._arrivals.append((delivery_id, event_type, body, time.time(), future))
        self._kick()
        return await future

    def finish(self, delivery_id: str, error: str | None) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finished.append((delivery_id, error, time.time(), future))
        self._kick()
        return future

    def _kick(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        """Every delivery that arrived or finished meanwhile, one statement each.

        Each statement is its own transaction (autocommit), so a batch costs one trip to the
        database thread rather than one per step. Arrivals go first: while acknowledgements keep
        waiting, outcomes are written at most every ``OUTCOME_DELAY``, and the intake, which waits
        for each outcome, slows down until the burst is over.
        """
        while self._arrivals or self._finished:
            if self._arrivals:
                batch, self._arrivals = self._arrivals[:MAX_BATCH], self._arrivals[MAX_BATCH:]
                await _settle([item[4] for item in batch], self._insert_new(batch))
                if self._arrivals and time.monotonic() < self._outcomes_due:
                    continue
            if self._finished:
                done, self._finished = self._finished[:MAX_BATCH], self._finished[MAX_BATCH:]
                await _settle([item[3] for item in done], self._record_outcomes(done))
                self._outcomes_due = time.monotonic() + OUTCOME_DELAY

    async def _insert_new(self, batch: list[tuple[str, str, bytes, float, Any]]) -> list[bool]:
        """Insert the deliveries not seen before (ids repeat on redelivery); which ones were new.

        One statement with no rows back (a ``RETURNING`` row costs a step, and each step takes
        the GIL again). Redeliveries are rare: only when fewer rows went in than the batch had is
        the table read back, and a row holding this batch's arrival time went in now.
        """
        ids = [item[0] for item in batch]
        async with self._session("deliveries", atomic=False) as db:
            cursor = await db.execute(
                "INSERT INTO deliveries (id, event_type, body, received_at)"
                f" VALUES {', '.join(['(?, ?, ?, ?)'] * len(batch))} ON CONFLICT (id) DO NOTHING",
                [value for item in batch for value in item[:4]],
            )
            if cursor.rowcount == len(batch):
                return [True] * len(batch)
            rows = await db.execute_fetchall(f"SELECT id, received_at FROM deliveries WHERE id IN ({marks(ids)})", ids)
        stored = dict(rows)
        fresh, seen = [], set()
        for delivery_id, _, _, at, _ in batch:
            fresh.append(delivery_id not in seen and stored.get(delivery_id) == at)
            seen.add(delivery_id)
        return fresh

    async def _record_outcomes(self, done: list[tuple[str, str | None, float, Any]]) -> list[None]:
        handled = [i for i, error, _, _ in done if error is None]
        failed = [(error, i) for i, error, _, _ in done if error is not None]
        if handled:
            async with self._session("deliveries", atomic=False) as db:
                await db.execute(
                    f"UPDATE deliveries SET handled_at = ? WHERE id IN ({marks(handled)})", [done[-1][2], *handled]
                )
        if failed:
            async with self._session("deliveries") as db:
                await db.executemany("UPDATE deliveries SET attempts = attempts + 1, error = ? WHERE id = ?", failed)
        return [None] * len(done)


async def _settle(futures: list[asyncio.Future[Any]], work: Awaitable[list[Any]]) -> None:
    """Give each waiting caller its result, or the error of the write they waited for."""
    try:
        results = await work
    except Exception as e:
        for future in futures:
            if not future.done():
                future.set_exception(e)
    else:
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)

