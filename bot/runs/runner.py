"""The runner: claims queued runs under the pool limits and supervises each one to its end.

Claims are one store transaction, so N simultaneous requests against a limit L start exactly L.
Each claimed run gets a task that takes it through the pipeline's stages (``pipeline.flow``).
The runner wakes when the store commits a change to runs, pools or flags, so whoever queues,
answers, freezes or cancels only writes the store. Nothing lives only in memory: after a restart
``adopt`` rebuilds the supervision from the store and from the containers' labels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from bot.executor.docker import ContainerInfo, DockerExecutor
from bot.runs.containers import ROLE_LABEL, RUN_LABEL, WORKSPACE_LABEL, containers
from bot.settings import Settings
from bot.store import ACTIVE, Run, Store
from bot.store.policy import WorkspaceKey
from bot.usage import budgets
from bot.usage.budgets import Clock
from bot.workspace import Workspaces
from bot import tasks

log = logging.getLogger(__name__)

Stage = Callable[[Run], Coroutine[Any, Any, None]]  # takes a run through the pipeline to its end


class Runner:
    def __init__(
        self, settings: Settings, store: Store, executor: DockerExecutor, workspaces: Workspaces,
        *, launch: Stage, resume: Stage, clock: Clock, replica: str,
    ) -> None:
        """``launch`` takes a claimed run from the start, ``resume`` an adopted one from where it is
        (``pipeline.flow``'s, bound to the parts they use); ``clock`` is the time daily budgets count by.
        The runs it claims belong to ``replica`` (this machine): it adopts only those."""
        self.settings = settings
        self.replica = replica
        self.store = store
        self.executor = executor
        self.workspaces = workspaces
        self._launch = launch
        self._resume = resume
        self.clock = clock
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._workspaces: dict[int, WorkspaceKey] = {}  # the workspace each supervised run works in
        self._stopping: set[int] = set()  # ended runs whose containers are being stopped
        self._kills: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly: kills in flight live here
        self._changes = store.subscribe("runs", "pools", "flags")
        self._loop: asyncio.Task[None] | None = None

    # Life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._drain_loop(), name="runner")

    async def stop(self) -> None:
        """Stop supervising; containers keep running and are re-adopted at the next start."""
        await tasks.cancel([self._loop, *self._tasks.values(), *self._kills])

    @property
    def supervised(self) -> set[int]:
        return set(self._tasks)

    async def containers(self) -> list[ContainerInfo]:
        """This bot's containers, running or not."""
        return await containers(self.executor, self.settings.instance)

    # Claiming -----------------------------------------------------------------------------

    async def drain(self) -> list[Run]:
        """Claim what the limits allow, the cluster's and this machine's, and launch it; returns the
        claimed runs."""
        s = self.settings
        claimed = await self.store.claim(
            max_running=s.max_running,
            pool_limits={name: pool.limit for name, pool in s.pools.items()},
            spawn_intervals={name: pool.spawn_interval for name, pool in s.pools.items()},
            frozen=s.frozen,
            frozen_pools=frozenset(name for name, pool in s.pools.items() if pool.frozen),
            held=await self._held(),
            replica=self.replica,
            replica_max_running=s.replica.max_running,
            daily=budgets.daily(s),
            now=self.clock.now(),
        )
        for run in claimed:
            self._supervise(run, self._launch(run))
        return claimed

    async def _held(self) -> frozenset[WorkspaceKey]:
        """Workspaces no new run may take, beyond those of active runs: one that any container
        still mounts, and one a supervised run still works in.

        A cancelled run is over in the store at once, but its containers run on code the agent
        wrote, which may ignore SIGTERM for the whole grace; and its task may still be starting a
        container or running host git. A workspace is free only once both are gone. Read before
        the claim: a container appears only for an active or a supervised run, held either way.
        """
        held = set(self._workspaces.values())
        for info in await self.containers():
            found = self.workspaces.at(info.labels.get(WORKSPACE_LABEL, ""))
            if found is not None:
                held.add((found.owner, found.repo, found.key))
        return frozenset(held)

    async def _drain_loop(self) -> None:
        """The runner's own cadence: woken by the store, and every ``schedule.drain`` seconds
        whatever happened (and that long after an error: a store or engine down is not asked again
        at once); it adopts at start and every ``schedule.reconcile`` seconds, a failed adoption
        again at the next drain."""
        every = self.settings.schedule
        adopt_at = 0.0  # monotonic time the next adoption is due
        while True:
            wait = every.drain  # after an error
            try:
                if time.monotonic() >= adopt_at:
                    adopt_at = time.monotonic() + every.drain  # tried again then if it fails
                    await self.adopt()
                    adopt_at = time.monotonic() + every.reconcile
                await self._stop_ended()
                await self.drain()
                wait = await self._next_wake()
            except Exception:
                log.exception("the runner could not drain the queue (is the Docker engine up?)")
            await self._changes.wait(max(min(wait, adopt_at - time.monotonic()), 0.05))

    async def _next_wake(self) -> float:
        """Sleep until the resync period ends, or earlier when a pool's spawn interval or pause ends,
        or the UTC day (and with it what daily budgets count) does."""
        now = time.time()
        wait = self.settings.schedule.drain
        if budgets.daily(self.settings) is not None:
            today = self.clock.now()
            wait = min(wait, budgets.next_day(today) - today + 0.05)
        for pool in await self.store.pools():
            interval = self.settings.pool_of(pool.name).spawn_interval
            for at in (pool.paused_until, pool.last_spawn_at + interval if interval else 0.0):
                if at > now:
                    wait = min(wait, at - now + 0.05)
        return wait

    def _supervise(self, run: Run, work: Coroutine[Any, Any, None]) -> None:
        run_id = run.id
        task = asyncio.create_task(work, name=f"run-{run_id}")
        self._tasks[run_id] = task
        self._workspaces[run_id] = (run.owner, run.repo, run.workspace_key)

        def done(t: asyncio.Task[None]) -> None:
            if self._tasks.get(run_id) is t:
                del self._tasks[run_id]
                del self._workspaces[run_id]
                self._stopping.discard(run_id)
                self._changes.notify({"runs"})  # its workspace may be free: drain again
            if not t.cancelled() and t.exception():
                log.error("run %s: supervisor crashed", run_id, exc_info=t.exception())

        task.add_done_callback(done)

    # Cancelling ---------------------------------------------------------------------------

    async def _stop_ended(self) -> None:
        """Stop every container (agent and QA) of a supervised run the store says is over while
        its task still works: cancelled, or failed from outside its task (its budget reached, see
        ``bot.usage.metering``).

        Level-triggered: a cancel or a budget's stop is only a store write; the run's task then sees
        its containers end, and each stage leaves a run that moved on as it is.
        """
        if not self._tasks:
            return
        active = {run.id for run in await self.store.runs(states=ACTIVE)}
        for run_id in self._tasks.keys() - active - self._stopping:
            run = await self.store.get(run_id)
            if run is not None and run.state in ("cancelled", "failed"):
                self._stopping.add(run_id)
                task = asyncio.create_task(self._kill(run_id), name=f"kill-{run_id}")
                self._kills.add(task)
                task.add_done_callback(self._kills.discard)

    async def _kill(self, run_id: int) -> None:
        try:
            mine = await containers(self.executor, self.settings.instance, run_id)
            await asyncio.gather(*(self.executor.kill(c.id, self.settings.limits.grace) for c in mine))
        except Exception:  # the engine may be away: the next wake-up tries again
            log.exception("run %s: could not stop its containers", run_id)
            self._stopping.discard(run_id)

    # Restart ------------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Rebuild supervision after a restart, from the store and the containers' labels.

        A preparing run whose container exists goes on as running; one without a container is
        queued again (nothing was started, so it cannot start twice). A running run is watched
        again with its original deadline; one whose container is gone fails. Runs past the
        agent (QA, harvesting) finish their pipeline, which is idempotent. Only this replica's runs
        (and those claimed before there were replicas): another's containers are on its machine.
        """
        store = self.store
        agents: dict[int, list[ContainerInfo]] = {}
        for info in await self.containers():
            if info.labels.get(ROLE_LABEL, "agent") == "agent":
                agents.setdefault(int(info.labels[RUN_LABEL]), []).append(info)
        for run in await store.runs(states=ACTIVE):
            if run.id in self._tasks or run.replica not in (self.replica, ""):
                continue
            mine = agents.get(run.id, [])
            if run.state == "preparing":
                if mine:
                    adopted = await store.transition(
                        run.id, "running", expect=("preparing",), container_id=mine[-1].id,
                        started_at=mine[-1].created,
                    )
                    if adopted:
                        self._supervise(adopted, self._resume(adopted))
                else:
                    await store.transition(run.id, "queued", reason="requeued after a restart", expect=("preparing",),
                                           replica="")
            elif run.state == "running":
                if any(c.id == run.container_id for c in mine):
                    self._supervise(run, self._resume(run))
                else:
                    await store.transition(run.id, "failed", reason="the agent's container disappeared", expect=("running",))
            else:
                self._supervise(run, self._resume(run))
