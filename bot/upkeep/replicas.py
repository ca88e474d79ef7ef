"""This bot among its replicas: its name, its heartbeat, and the job that gives up on lost ones.

Every replica heartbeats in the store on its own cadence (one small worker). The lost-replica job
runs on one replica per interval in the cluster (the scheduler's lease): it gives up on replicas
silent for ``replica.ttl`` and on their runs (``bot.store.replicas``); the reporter then shows
each of those runs' end on the Forge like any other (the reason in its status comment, its
stopwatch stopped), and ``/retry`` queues it for a live replica.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

from bot.settings import Settings
from bot.store import Run, Store
from bot.workspace import safe_write
from bot import tasks

log = logging.getLogger(__name__)

ID_FILE = "replica-id"


def own_id(settings: Settings) -> str:
    """This replica's name: as configured, else the one its ``data_dir`` keeps from its first start
    (the host name and a hash of ``data_dir``), so a bot whose host name changes (a container made
    anew on the same volume) still owns, and re-adopts, the runs it claimed."""
    if settings.replica.id:
        return settings.replica.id
    kept = settings.data_dir / ID_FILE
    if kept.is_file() and (name := kept.read_text().strip()):
        return name
    name = f"{socket.gethostname()}-{settings.instance[:6]}"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    safe_write(kept, name + "\n")
    return name


class Heartbeat:
    """Tells the store every ``replica.heartbeat`` seconds that this replica is alive, and its limit.

    It also knows since when its beats have gone through on time, one after the other
    (``steady_since``): a replica cut off from the store (PostgreSQL away, a network split) is no
    judge of who else was, since they may have been cut off with it, and their beats land a moment
    after its own.
    """

    def __init__(self, settings: Settings, store: Store, replica: str) -> None:
        self.settings, self.store, self.replica = settings, store, replica
        self.steady_since: float | None = None
        self._task: asyncio.Task[None] | None = None

    async def beat(self) -> None:
        s = self.settings
        began = time.monotonic()
        try:
            await self.store.heartbeat(self.replica, socket.gethostname(), s.replica.max_running or s.max_running)
        except BaseException:
            self.steady_since = None
            raise
        if time.monotonic() - began > s.replica.heartbeat:  # it waited out an outage
            self.steady_since = None
        elif self.steady_since is None:
            self.steady_since = time.monotonic()

    def steady_for(self, seconds: float) -> bool:
        """Whether its beats have gone through on time for the last ``seconds``."""
        return self.steady_since is not None and time.monotonic() - self.steady_since >= seconds

    async def start(self) -> None:
        """Beat once now (a replica coming back is alive again before it adopts), then on its cadence."""
        await self.beat()
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating; the others wait ``replica.ttl`` for this replica to come back."""
        await tasks.cancel([self._task])

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.replica.heartbeat)
            try:
                await self.beat()
            except Exception:
                log.exception("could not heartbeat in the store")


async def reclaim_lost(store: Store, heartbeat: Heartbeat, ttl: float) -> list[Run]:
    """Give up on the replicas silent for ``ttl`` seconds: their runs fail with the reason, or
    queue again once if their agent had not started; the runs changed. Only once this replica's
    own beats have gone through for a whole TTL: after an outage of the store (or a start of the
    whole cluster), every live replica has had that long to be heard again."""
    if not heartbeat.steady_for(ttl):
        return []
    changed = await store.reclaim_lost(ttl)
    for run in changed:
        log.warning("run %s is %s: %s", run.id, run.state, run.reason)
    return changed
