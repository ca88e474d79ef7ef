"""Deliveries recorded by group commit, the same on every backend: those that arrive together
are written with one statement, and each caller still returns only once its row is committed.

A burst then costs one commit (one trip to the database, one flush of its log) instead of one per
delivery. A backend says how to insert a batch and how to record a batch of outcomes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

MAX_BATCH = 500  # deliveries written in one transaction at most
OUTCOME_DELAY = 0.1  # seconds outcomes of handled deliveries may wait behind arrivals

Arrival = tuple[str, str, bytes, float, "asyncio.Future[bool]"]  # id, event type, body, received at
Outcome = tuple[str, "str | None", float, "asyncio.Future[None]"]  # id, error, finished at


class DeliveryBatches:
    def __init__(self) -> None:
        self._arrivals: list[Arrival] = []
        self._finished: list[Outcome] = []
        self._task: asyncio.Task[None] | None = None
        self._outcomes_due = 0.0

    async def insert_new(self, batch: list[Arrival]) -> list[bool]:
        """Insert the deliveries not seen before (ids repeat on redelivery); which ones were new."""
        raise NotImplementedError

    async def record_outcomes(self, done: list[Outcome]) -> list[None]:
        raise NotImplementedError

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
        """Every delivery that arrived or finished meanwhile, a statement each.

        Arrivals go first: while acknowledgements keep waiting, outcomes are written at most every
        ``OUTCOME_DELAY``, and the intake, which waits for each outcome, slows down until the burst
        is over.
        """
        while self._arrivals or self._finished:
            if self._arrivals:
                batch, self._arrivals = self._arrivals[:MAX_BATCH], self._arrivals[MAX_BATCH:]
                await _settle([item[4] for item in batch], self.insert_new(batch))
                if self._arrivals and time.monotonic() < self._outcomes_due:
                    continue
            if self._finished:
                done, self._finished = self._finished[:MAX_BATCH], self._finished[MAX_BATCH:]
                await _settle([item[3] for item in done], self.record_outcomes(done))
                self._outcomes_due = time.monotonic() + OUTCOME_DELAY


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
