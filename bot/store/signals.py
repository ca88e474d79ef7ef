"""Change signals: after a transaction commits, the store tells who listens which tables it touched.

Workers wait on committed state instead of on wake-up calls placed by hand: a write that a
worker cares about cannot forget to wake it, and a wake-up never arrives before the data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


class Subscription:
    """Wakes a worker when a committed transaction touched one of its topics (table names).

    Changes are remembered until the next ``wait``, so none is lost while the worker is busy, and a
    burst of them costs one wake-up.
    """

    def __init__(self, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self._changed: set[str] = set()
        self._event = asyncio.Event()

    def notify(self, touched: set[str]) -> None:
        """Called by the store after COMMIT with the tables the transaction changed."""
        hit = self.topics & touched
        if hit:
            self._changed |= hit
            self._event.set()

    async def wait(self, timeout: float) -> set[str]:  # noqa: ASYNC109 (a wake-up time, not a call bound)
        """The topics changed since the last wait; empty when ``timeout`` seconds pass without one."""
        if not self._changed:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                async with asyncio.timeout(timeout):
                    await self._event.wait()
            except TimeoutError:
                pass
        changed, self._changed = self._changed, set()
        self._event.clear()
        return changed
