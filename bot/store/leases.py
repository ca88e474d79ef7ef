"""Work that one replica at a time does in the whole cluster, through the store's leases.

Two uses, one mechanism. A timed job on shared state (retention, the Forge's stray stopwatches,
the lost-replica job) runs on the replica holding its lease for the interval (``cluster_turn``):
the holder keeps it while it lives, and another takes over once it has been silent a while. A
piece of work that must not be done twice at once (reporting one run, one issue's outbox) holds a
lease on its key while it works (``exclusive``), renewed until it ends, given back then; a
replica killed mid-work leaves the lease to expire, and the work falls to another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

log = logging.getLogger(__name__)

TURN = 1.5  # a job's lease lasts this many intervals: its holder takes it again before it ends
HELD = 30.0  # seconds a work lease lasts unless renewed (a third of it between renewals)


class _Store(Protocol):
    async def take_lease(self, name: str, holder: str, ttl: float) -> bool: ...
    async def drop_lease(self, name: str, holder: str) -> None: ...


async def cluster_turn(store: _Store, job: str, holder: str, interval: float) -> bool:
    """Whether ``holder`` runs the cluster's ``job`` this interval (and keeps it for the next)."""
    return await store.take_lease(f"job:{job}", holder, interval * TURN)


@asynccontextmanager
async def exclusive(store: _Store, names: Sequence[str], holder: str, ttl: float = HELD) -> AsyncIterator[bool]:
    """Hold every lease in ``names`` while the block runs, or none: True when held. False means
    another replica is at that work now (it does what is due; nothing waits for it here)."""
    taken: list[str] = []
    try:
        for name in names:
            if not await store.take_lease(name, holder, ttl):
                break
            taken.append(name)
        if len(taken) < len(names):
            yield False
            return
        renew = asyncio.create_task(_renew(store, taken, holder, ttl), name=f"lease-{names[0]}")
        try:
            yield True
        finally:
            renew.cancel()
            await asyncio.gather(renew, return_exceptions=True)
    finally:
        for name in taken:
            await store.drop_lease(name, holder)


async def _renew(store: _Store, names: list[str], holder: str, ttl: float) -> None:
    while True:
        await asyncio.sleep(ttl / 3)
        for name in names:
            if not await store.take_lease(name, holder, ttl):
                log.warning("lease %s was taken over while %s still held it", name, holder)
