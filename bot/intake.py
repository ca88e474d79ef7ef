"""Handles recorded deliveries after the webhook has been answered.

The endpoint only stores the delivery; this worker parses it, drops the bot's own events and runs
the handlers. A delivery is marked handled only when its handlers finished, so one recorded just
before a crash, or whose handler hit a Forge outage, is handled again later (at start, and by
the scheduler). Handlers are idempotent through trigger keys, so handling twice is harmless.
"""

from __future__ import annotations

import asyncio
import logging

from .forge import ForgeError
from .routing import Router
from .services import Services
from .webhook import Event, parse_body

log = logging.getLogger(__name__)


class Intake:
    def __init__(self, services: Services, router: Router, max_attempts: int = 10) -> None:
        self._services = services
        self._router = router
        self._max_attempts = max_attempts
        self._queue: asyncio.Queue[tuple[str, str, bytes]] = asyncio.Queue()
        self._queued: set[str] = set()
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._work(), name="intake")
        await self.retry_pending()

    async def stop(self) -> None:
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    def submit(self, delivery_id: str, event_type: str, body: bytes) -> None:
        if delivery_id not in self._queued:
            self._queued.add(delivery_id)
            self._queue.put_nowait((delivery_id, event_type, body))

    async def retry_pending(self) -> None:
        """Queue every recorded delivery not yet handled (crash recovery, Forge outages)."""
        for delivery in await self._services.store.pending_deliveries(self._max_attempts):
            self.submit(*delivery)

    async def drained(self) -> None:
        """Wait until everything submitted so far has been handled (for tests and shutdown)."""
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            delivery_id, event_type, body = await self._queue.get()
            try:
                try:
                    error = await self.handle(delivery_id, event_type, body)
                except Exception as e:  # a stored body that no longer parses: keep the worker alive
                    log.exception("delivery %s could not be handled", delivery_id)
                    error = f"{type(e).__name__}: {e}"
                # Written with the next group commit; waiting for it also keeps the intake from
                # outrunning the front door during a burst (acks come first).
                await self._services.store.finish_delivery(delivery_id, error)
            except Exception:
                log.exception("could not record the outcome of delivery %s", delivery_id)
            finally:
                self._queued.discard(delivery_id)
                self._queue.task_done()

    async def handle(self, delivery_id: str, event_type: str, body: bytes) -> str | None:
        """Run the handlers of one delivery; returns an error to retry later, or None when done."""
        event = Event(event_type=event_type, delivery_id=delivery_id, data=parse_body(body))
        try:
            sender = (event.data.get("sender") or {}).get("login")
            if sender and sender == await self._services.bot_login():
                return None
            await self._router.dispatch(event, self._services)
        except ForgeError as e:
            if not e.transient:
                log.error("delivery %s (%s): %s", delivery_id, event_type, e)
                return None
            log.warning("delivery %s (%s) will be retried: %s", delivery_id, event_type, e)
            return str(e)
        except Exception as e:
            log.exception("delivery %s (%s) failed", delivery_id, event_type)
            return f"{type(e).__name__}: {e}"
        return None

