"""Timed jobs on the app's event loop (APScheduler 3.11): sweep, reap, retention, lost replicas.

The runner and the reporter own their cadences (re-adoption, stray stopwatches): nothing here calls them.
A job on this machine (sweep its workspaces, reap its containers) runs on every replica; one on the
shared store (retention, lost replicas, redelivery) on one replica per interval in the cluster.

Cleanup follows Prow's sinker: never touch anything younger than 30 s, re-read the store right
before deleting, and mark a workspace on one pass before deleting it on the next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot.runs.containers import RUN_LABEL
from bot.runs.runner import Runner
from bot.services import Services
from bot.store import ACTIVE, LIVE, Pruned, Run
from bot.store.leases import cluster_turn
from bot import tasks
from bot.upkeep import replicas
from bot.workspace import remove_workspace, safe_write
from bot.workspace import layout

log = logging.getLogger(__name__)

MIN_AGE = 30.0


class Scheduler:
    def __init__(self, services: Services, runner: Runner, heartbeat: replicas.Heartbeat) -> None:
        self.services = services
        self.runner = runner  # what it supervises is never reaped
        self.heartbeat = heartbeat  # whether this replica may judge others lost
        self._scheduler = AsyncIOScheduler()
        self._running: set[asyncio.Task[object] | None] = set()  # the jobs at work, ended at the stop
        every = services.settings.schedule
        self.add("sweep", self.sweep, every.sweep)
        self.add("reap", self.reap, every.reap)
        self.add("retention", self.prune, every.retention, cluster=True)
        self.add("lost-replicas", self.reclaim_lost, services.settings.replica.heartbeat, cluster=True)

    def add(self, name: str, job: Callable[[], Awaitable[object]], seconds: float, *, cluster: bool = False) -> None:
        """Run ``job`` every ``seconds``; a ``cluster`` job only on the replica whose turn it is."""
        if cluster:
            job = partial(self._in_turn, name, job, seconds)
        self._scheduler.add_job(
            partial(self._tracked, job), "interval", seconds=float(seconds), id=name, coalesce=True, max_instances=1,
            misfire_grace_time=None,
        )

    def start(self) -> None:
        self._scheduler.start()

    async def stop(self) -> None:
        """No job starts after this, and none still works once it returns (the store closes next)."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        await tasks.cancel(self._running)

    async def _tracked(self, job: Callable[[], Awaitable[object]]) -> object:
        """``job`` as one of those the stop ends (APScheduler's own stop cancels them, unawaited)."""
        task = asyncio.current_task()  # APScheduler runs each job in a task of its own
        self._running.add(task)
        try:
            return await job()
        finally:
            self._running.discard(task)

    async def _in_turn(self, name: str, job: Callable[[], Awaitable[object]], seconds: float) -> object:
        if await cluster_turn(self.services.store, name, self.services.replica, seconds):
            return await job()
        return None

    async def reap(self, min_age: float = MIN_AGE) -> list[str]:
        """Kill and remove our containers that belong to no active run; returns their ids."""
        store = self.services.store
        reaped = []
        for info in await self.runner.containers():
            if time.time() - info.created < min_age:
                continue
            run = await store.get(int(info.labels[RUN_LABEL]))  # re-read right before deciding
            if run is not None and run.state in ACTIVE and run.id in self.runner.supervised:
                continue
            if run is not None and run.state in ACTIVE and run.container_id == info.id:
                continue  # not yet re-adopted: the runner's next adoption picks it up
            log.warning("reaping container %s of run %s (%s)", info.name, run and run.id, run and run.state)
            await self.services.executor.kill(info.id, self.services.settings.limits.grace)
            await self.services.executor.remove(info.id)
            reaped.append(info.id)
        return reaped

    async def sweep(self) -> list[str]:
        """Delete workspaces of finished runs past their age; mark first, delete on the next pass."""
        settings = self.services.settings
        store = self.services.store
        deleted = []
        for ws in self.services.workspaces.all():
            mine = await store.runs(owner=ws.owner, repo=ws.repo, workspace_key=ws.key)
            mark = ws.meta / layout.SWEPT
            last = max(mine, key=_ended) if mine else None
            due = not any(r.state in LIVE for r in mine) and (
                last is None or time.time() - _ended(last) > getattr(settings.sweep, last.state)
            )
            if not due:
                mark.unlink(missing_ok=True)
                continue
            if not mark.exists():
                safe_write(mark, str(time.time()))
                continue
            await remove_workspace(ws)
            compacted = await store.compact(ws.owner, ws.repo, ws.key)  # its history goes with it
            log.info("swept workspace %s and compacted its %d finished runs", ws.root, compacted)
            deleted.append(str(ws.root))
        return deleted

    async def prune(self) -> Pruned:
        """Drop the store's history past its retention, and give the space back."""
        ages = self.services.settings.retention
        pruned = await self.services.store.prune(bodies=ages.bodies, deliveries=ages.deliveries)
        log.info("pruned the store: %s", pruned)
        return pruned


    async def reclaim_lost(self) -> list[Run]:
        return await replicas.reclaim_lost(self.services.store, self.heartbeat, self.services.settings.replica.ttl)


def _ended(run) -> float:
    return run.ended_at or run.updated_at
