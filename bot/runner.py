"""The runner: claims queued runs under the pool limits and supervises each one to its end.

Claims are one store transaction, so N simultaneous requests against a limit L start exactly L.
Each claimed run gets a task that prepares its workspace, starts its container and waits for it;
the outcome is applied to that run only, and only if it is still in the state the task left it
in (a cancel in between wins). Nothing lives only in memory: after a restart ``adopt`` rebuilds
the supervision from the store and from the containers' labels.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from . import completion
from .agents import Agent, resolve
from .executor.docker import ContainerInfo, ContainerSpec, DockerExecutor, ExecutorError, Mount
from .forge import ForgeError
from .services import Services
from .store import ACTIVE, Run
from .workspace import Workspace, Workspaces, branch_choices

log = logging.getLogger(__name__)

RUN_LABEL = "dispatchbot.run"
INSTANCE_LABEL = "dispatchbot.instance"
ROLE_LABEL = "dispatchbot.role"
BASE_ENV = {"TERM": "dumb", "NO_COLOR": "1", "CI": "true", "HOME": "/tmp"}
WORKDIR = "/workspace/repo"


class Runner:
    def __init__(self, services: Services, executor: DockerExecutor, workspaces: Workspaces) -> None:
        self.services = services
        self.settings = services.settings
        self.executor = executor
        self.workspaces = workspaces
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._containers: dict[int, str] = {}
        self._kills: set[asyncio.Task[None]] = set()  # the loop holds tasks weakly: kills in flight live here
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    # Life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._drain_loop(), name="runner")

    async def stop(self) -> None:
        """Stop supervising; containers keep running and are re-adopted at the next start."""
        tasks = [t for t in (self._loop, *self._tasks.values()) if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def freeze(self, frozen: bool, pool: str | None = None) -> None:
        """Freeze or thaw the bot (or one pool) at run time; requests keep being queued."""
        if pool is None:
            await self.services.store.set_flag("frozen", "1" if frozen else "0")
        else:
            await self.services.store.set_pool_frozen(pool, frozen)
        self.wake()
        self.services.wake_reporter()

    def cancel(self, run_id: int) -> None:
        """Kill the container of a run the store already says is cancelled."""
        container = self._containers.get(run_id)
        if container:
            kill = asyncio.create_task(self.executor.kill(container, self.settings.limits.grace))
            self._kills.add(kill)
            kill.add_done_callback(self._kills.discard)

    async def idle(self) -> None:
        """Wait until no run is being supervised (tests and benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    @property
    def supervised(self) -> set[int]:
        return set(self._tasks)

    # Claiming -----------------------------------------------------------------------------

    async def drain(self) -> list[Run]:
        """Claim what the limits allow and launch it; returns the claimed runs."""
        s = self.settings
        limits = {name: pool.limit for name, pool in s.pools.items()}
        claimed = await self.services.store.claim(
            max_running=s.max_running,
            pool_limits=limits,
            spawn_intervals={name: pool.spawn_interval for name, pool in s.pools.items()},
            frozen=s.frozen,
            frozen_pools=frozenset(name for name, pool in s.pools.items() if pool.frozen),
        )
        for run in claimed:
            self._supervise(run.id, self._launch(run))
        if claimed:
            self.services.wake_reporter()
        return claimed

    async def _drain_loop(self) -> None:
        adopted = False
        while True:
            try:
                if not adopted:
                    await self.adopt()
                    adopted = True
                await self.drain()
            except Exception:
                log.exception("the runner could not drain the queue (is the Docker engine up?)")
            timeout = await self._next_wake()
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel here
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()

    async def _next_wake(self) -> float:
        """Sleep until the drain timer, or earlier when a pool's spawn interval or pause ends."""
        now = time.time()
        wait = self.settings.schedule.drain
        for pool in await self.services.store.pools():
            interval = self.settings.pool_of(pool.name).spawn_interval
            for at in (pool.paused_until, pool.last_spawn_at + interval if interval else 0.0):
                if at > now:
                    wait = min(wait, at - now + 0.05)
        return max(wait, 0.05)

    def _supervise(self, run_id: int, coro) -> None:
        task = asyncio.create_task(coro, name=f"run-{run_id}")
        self._tasks[run_id] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tasks.get(run_id) is t:
                del self._tasks[run_id]
                self._containers.pop(run_id, None)
            if not t.cancelled() and t.exception():
                log.error("run %s: supervisor crashed", run_id, exc_info=t.exception())
            self.wake()

        task.add_done_callback(done)

    # One run ------------------------------------------------------------------------------

    async def _launch(self, run: Run) -> None:
        store = self.services.store
        try:
            agent = resolve(self.settings, run.agent_spec)
            if not run.is_pull and not run.branch:
                run = await store.assign_branch(run.id, branch_choices(run.task, run.number))
            ws, prompt, head_sha = await completion.prepare(self.services, self.workspaces, run)
        except ForgeError as e:
            if e.transient:
                log.warning("run %s: Forge unavailable while preparing, requeued: %s", run.id, e)
                await store.transition(run.id, "queued", reason=f"requeued: {e}", expect=("preparing",))
            else:
                await store.transition(run.id, "failed", reason=f"could not prepare: {e}", expect=("preparing",))
            return
        except Exception as e:
            log.exception("run %s: preparing failed", run.id)
            await store.transition(run.id, "failed", reason=f"could not prepare the workspace: {e}", expect=("preparing",))
            self.services.wake_reporter()
            return
        run = await store.update(run.id, branch=ws.branch, base_branch=ws.base_branch, head_sha=head_sha)
        spec = self.container_spec(run, agent, ws, agent.argv(prompt))
        try:
            container = await self.executor.start(spec)
        except ExecutorError as e:
            await store.transition(run.id, "failed", reason=str(e), expect=("preparing",))
            self.services.wake_reporter()
            return
        self._containers[run.id] = container
        running = await store.transition(
            run.id, "running", expect=("preparing",), container_id=container, started_at=time.time()
        )
        if running is None:  # cancelled while preparing
            await self.executor.kill(container, self.settings.limits.grace)
            await self.executor.remove(container)
            return
        self.services.wake_reporter()
        await self._watch(running, ws)

    async def _watch(self, run: Run, ws: Workspace) -> None:
        """Wait for the run's container and apply its outcome to this run only."""
        self._containers[run.id] = run.container_id
        deadline = (run.started_at or time.time()) + self.settings.limits.timeout
        while True:
            try:
                exit = await self.executor.wait(run.container_id, deadline, self.settings.limits.grace)
                break
            except ExecutorError as e:  # the engine's connection dropped: the container may still run
                log.warning("run %s: lost the Docker engine while waiting, waiting again: %s", run.id, e)
                await asyncio.sleep(2.0)
        await completion.collect_logs(self.executor, run, ws, self.settings)
        await self.executor.remove(run.container_id)
        await completion.finish(self, run, ws, exit)
        self.services.wake_reporter()

    def container_spec(
        self, run: Run, agent: Agent, ws: Workspace, argv: list[str], role: str = "agent"
    ) -> ContainerSpec:
        env = dict(BASE_ENV)
        env |= {k: os.environ[k] for k in agent.env if os.environ.get(k)}
        env |= agent.fixed_env
        ident = self.settings.git
        env |= {
            "GIT_AUTHOR_NAME": ident.name, "GIT_AUTHOR_EMAIL": ident.email,
            "GIT_COMMITTER_NAME": ident.name, "GIT_COMMITTER_EMAIL": ident.email,
        }
        mounts = [Mount(ws.root, "/workspace")]
        mounts += [Mount(Path(d), f"/tmp/{Path(d).name}", read_only=True) for d in agent.credentials]
        return ContainerSpec(
            name=f"dispatchbot-{self.settings.instance}-run-{run.id}-{run.attempts}-{role}",
            image=agent.image,
            argv=argv,
            workdir=WORKDIR,
            mounts=mounts,
            env=env,
            labels={
                RUN_LABEL: str(run.id), ROLE_LABEL: role, INSTANCE_LABEL: self.settings.instance,
                "dispatchbot.workspace": str(ws.root),
            },
            limits=self.settings.limits,
        )

    async def containers(self) -> list[ContainerInfo]:
        """This bot's containers, running or not."""
        return await self.executor.list(f"{INSTANCE_LABEL}={self.settings.instance}")

    async def dry_run(self, run: Run) -> tuple[list[str], str]:
        """The argv and prompt a run would get, after preparing its workspace; starts nothing."""
        agent = resolve(self.settings, run.agent_spec)
        _, prompt, _ = await completion.prepare(self.services, self.workspaces, run)
        return agent.argv(prompt), prompt

    # Restart ------------------------------------------------------------------------------

    async def adopt(self) -> None:
        """Rebuild supervision after a restart, from the store and the containers' labels.

        A preparing run whose container exists goes on as running; one without a container is
        queued again (nothing was started, so it cannot start twice). A running run is watched
        again with its original deadline; one whose container is gone fails. Runs past the
        agent (QA, harvesting) finish their pipeline, which is idempotent.
        """
        store = self.services.store
        containers: dict[int, list] = {}
        for info in await self.containers():
            if info.labels.get(ROLE_LABEL, "agent") == "agent":
                containers.setdefault(int(info.labels[RUN_LABEL]), []).append(info)
        for run in await store.runs(states=ACTIVE):
            if run.id in self._tasks:
                continue
            mine = containers.get(run.id, [])
            if run.state == "preparing":
                if mine:
                    adopted = await store.transition(
                        run.id, "running", expect=("preparing",), container_id=mine[-1].id,
                        started_at=mine[-1].created,
                    )
                    if adopted:
                        self._supervise(run.id, self._readopt(adopted))
                else:
                    await store.transition(run.id, "queued", reason="requeued after a restart", expect=("preparing",))
            elif run.state == "running":
                if any(c.id == run.container_id for c in mine):
                    self._supervise(run.id, self._readopt(run))
                else:
                    await store.transition(run.id, "failed", reason="the agent's container disappeared", expect=("running",))
            else:
                self._supervise(run.id, self._refinish(run))
        self.wake()

    async def _readopt(self, run: Run) -> None:
        ws = self.workspaces.existing(run.owner, run.repo, run.workspace_key, run.branch, run.base_branch)
        await self._watch(run, ws)

    async def _refinish(self, run: Run) -> None:
        ws = self.workspaces.existing(run.owner, run.repo, run.workspace_key, run.branch, run.base_branch)
        await completion.after_agent(self, run, ws)
        self.services.wake_reporter()
