"""Change signals across processes: every committed write is announced with ``NOTIFY``, and each
store ``LISTEN``s, so a worker on one replica wakes for a commit made on another.

The notification is sent inside the writing transaction, so PostgreSQL delivers it only once the
data is committed, never before. A store hears its own commits at once, without the round trip,
and skips their echo. If the listening connection is lost (PostgreSQL restarted), it is made
again, and every subscription is woken once, since a commit may have gone unheard meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import Iterable

import asyncpg

from bot.store.signals import Subscription

log = logging.getLogger(__name__)

CHANNEL = "dispatchbot_changes"
PING = 2.0  # seconds between checks that the listening connection is alive
# Topics only the writing replica hears of: a replica's intake handles the deliveries it received,
# and no worker on another replica waits for them, nor for heartbeats and leases, which are read
# when needed (announcing costs a lock at every commit).
LOCAL_TOPICS = frozenset({"deliveries", "replicas", "leases"})


class ChangeFeed:
    def __init__(self, url: str) -> None:
        self._url = url
        self.origin = uuid.uuid4().hex[:12]  # tells this store's notifications from others'
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()

    async def start(self) -> None:
        """Listen from now on (returns once listening), and keep listening until ``close``."""
        self._task = asyncio.create_task(self._listen())
        listening = asyncio.create_task(self._listening.wait())
        await asyncio.wait({self._task, listening}, return_when=asyncio.FIRST_COMPLETED)
        listening.cancel()
        if self._task.done():
            self._task.result()  # the first connection failed: say why

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def add(self, subscription: Subscription) -> None:
        self._subscriptions.add(subscription)

    def payload(self, touched: Iterable[str]) -> str:
        return f"{self.origin} {','.join(sorted(touched))}"

    def wake(self, touched: set[str]) -> None:
        for subscription in list(self._subscriptions):
            subscription.notify(touched)

    def _heard(self, _db: object, _pid: int, _channel: str, payload: str) -> None:
        origin, _, topics = payload.partition(" ")
        if origin != self.origin:
            self.wake(set(topics.split(",")))

    async def _listen(self) -> None:
        first = True
        while True:
            try:
                db = await asyncpg.connect(self._url)
            except (OSError, asyncpg.PostgresError):
                if first:
                    raise
                await asyncio.sleep(PING)
                continue
            try:
                await db.add_listener(CHANNEL, self._heard)
                if not first:
                    log.info("store: listening for changes again")
                    self.wake({t for s in list(self._subscriptions) for t in s.topics})
                first = False
                self._listening.set()
                while True:
                    await asyncio.sleep(PING)
                    await db.fetchval("SELECT 1", timeout=PING)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
                log.warning("store: lost the connection that listens for changes (%s); reconnecting", e)
            finally:
                db.terminate()
