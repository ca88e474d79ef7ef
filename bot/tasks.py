"""Ending a worker's tasks for good."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

AGAIN = 1.0  # seconds between cancels of a task that went on


async def cancel(tasks: Iterable[asyncio.Task | None]) -> None:
    """Cancel the tasks and wait until they ended, cancelling again any that went on.

    A cancel can be lost on its way (a library turning it into a timeout of its own, which a
    worker's loop takes for an error and goes on), and a worker that lost its one cancel would
    never end: the bot's shutdown would hang on it.
    """
    pending = {t for t in tasks if t is not None}
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=AGAIN)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: an error at the end is no news
