"""Handles recorded deliveries after the webhook has been answered.

The endpoint only stores the delivery; this worker runs the handlers. A delivery is marked handled
only when its handlers finished, so one recorded just before a crash, or whose handler hit a Forge
outage, is handled again later (at start, and by the scheduler). Handlers are idempotent through
trigger keys, so handling twice is harmless.

The store is the queue; memory holds a window of it. During a burst the worker falls behind the
front door (acks come first), and holding every parsed payload would grow the heap and slow the
acks down; deliveries past the window stay in the store and are read back when the window empties.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from bot.forge.client import ForgeError
from bot.intake.routing import Router
from bot.intake.webhook import BadRequest, Event
from bot import tasks

if TYPE_CHECKING:  # the way in is below what it hands deliveries to
    from bot.services import Services

log = logging.getLogger(__name__)


WINDOW = 200  # parsed deliveries held in memory at most


class Intake:
    def __init__(self, services: Services, router: Router, max_attempts: int = 10) -> None:
        self._services = services
        self._router = router
        self._max_attempts = max_attempts
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._queued: set[str] = set()
        self._spilled = False  # deliveries were left in the store for want of room
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="intake")
        await self.retry_pending()

    async def stop(self) -> None:
        await tasks.cancel([self._worker])

    def submit(self, event: Event) -> None:
        if event.delivery_id in self._queued:
            return
        if self._queue.qsize() >= WINDOW:
            self._spilled = True
            return
        self._queued.add(event.delivery_id)
        self._queue.put_nowait(event)

    async def retry_pending(self, *, untried: bool = False) -> None:
        """Queue recorded deliveries not yet handled, oldest first (crash recovery, Forge outages).

        ``untried`` reads back only deliveries that never failed: the refill after a burst must
        not retry, in a tight loop, those waiting out an outage for the scheduler's next pass.
        """
        store = self._services.store
        pending = await store.pending_deliveries(1 if untried else self._max_attempts, limit=WINDOW)
        self._spilled = self._spilled or len(pending) == WINDOW
        for delivery_id, event_type, body in pending:
            try:
                self.submit(Event.parse(event_type, delivery_id, body))
            except BadRequest as e:  # the front door stores only parsed bodies; counted as a failed attempt
                log.error("delivery %s cannot be parsed: %s", delivery_id, e)
                await store.finish_delivery(delivery_id, str(e))

    async def drained(self) -> None:
        """Wait until everything submitted so far has been handled (for tests)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                error = await self.handle(event)
                # Written with the next group commit; waiting for it also keeps the intake from
                # outrunning the front door during a burst (acks come first).
                await self._services.store.finish_delivery(event.delivery_id, error)
            except Exception:
                log.exception("could not record the outcome of delivery %s", event.delivery_id)
            self._queued.discard(event.delivery_id)
            if self._spilled and self._queue.empty():
                self._spilled = False
                await self._refill()
            self._queue.task_done()  # after the refill, so ``drained`` also waits for what spilled

    async def _refill(self) -> None:
        try:
            await self.retry_pending(untried=True)
        except Exception:
            log.exception("could not read back deliveries; the scheduler's pass will")

    async def handle(self, event: Event) -> str | None:
        """Run the handlers of one delivery; returns an error to retry later, or None when done."""
        try:
            if event.payload.sender.login == await self._services.bot_login():
                return None
            await self._router.dispatch(event, self._services)
        except ForgeError as e:
            if not e.transient:
                log.error("delivery %s (%s): %s", event.delivery_id, event.event_type, e)
                return None
            log.warning("delivery %s (%s) will be retried: %s", event.delivery_id, event.event_type, e)
            return str(e)
        except Exception as e:
            log.exception("delivery %s (%s) failed", event.delivery_id, event.event_type)
            return f"{type(e).__name__}: {e}"
        return None
