"""Several bot replicas on one PostgreSQL, for tests: what a cluster of ``dispatchbot serve``
processes looks like from outside.

One real PostgreSQL server of its own (tests/postgres.py: so a test may restart it), the fake
Forge, and ``count`` real bot processes (tests/process.py) with separate data dirs, the same
``store_url`` and the real Docker engine. The Forge's one webhook points at a small load balancer
here, which sends each delivery to one replica in turn (skipping dead ones, as a balancer's health
check would), to one chosen replica, or to all of them at once (a proxy's retry reaching two).

Each replica is a process handle: ``kill()`` is kill -9, ``await start()`` brings it back on the
same data dir. The cluster counts agent containers on the Docker engine by label, can watch the
most seen at once while runs go, and reads the shared store::

    cluster = await replicas()            # the fixture: two replicas, started
    a, b = cluster.replicas
    cluster.balancer.route = "alternate"  # or 0 / 1 (one replica), or "all"
    async with cluster.watch_agents() as watch:
        ...
    assert watch.most <= 3
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bot.executor.docker import ContainerInfo, DockerExecutor
from bot.gateway.service import dismantle
from bot.runs.containers import INSTANCE_LABEL, ROLE_LABEL
from bot.settings import Settings
from bot.store import Run, open_store

from .harness import AGENT_KEYS, SECRET, free_port, serve_locally
from .helpers import wait_for
from .postgres import PostgresServer
from .process import BotProcess

# Headers a proxy does not pass on as they are.
HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


class Replica(BotProcess):
    """One ``dispatchbot serve`` of the cluster, named ``replica.id``."""

    def __init__(self, name: str, forge_url: str, token: str, data_dir: Path, **env: str) -> None:
        super().__init__(forge_url, token, data_dir, DISPATCHBOT_REPLICA__ID=name, **env)
        self.name = name
        self.instance = Settings(data_dir=data_dir).instance  # the label on this replica's containers

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def restart(self) -> None:
        """kill -9, then start again on the same data dir."""
        self.kill()
        await self.start()

    async def post(self, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        """POST a delivery (as the Forge signed it) to this replica's ``/webhook``."""
        async with aiohttp.ClientSession() as session:
            async with session.post(self.url + "/webhook", data=body, headers=headers) as resp:
                return resp.status, await resp.read()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Forwarded:
    delivery_id: str
    event_type: str
    action: str
    sender: str  # who caused it (the bot's own changes come back too)
    replicas: list[str]  # the names of the replicas it was sent to
    statuses: list[int] = field(default_factory=list)  # their answers, in the same order (502: none)


class Balancer:
    """The load balancer in front of the replicas: the Forge's hook posts here.

    ``route``: ``"alternate"`` (one live replica after the other), an index (that replica alone,
    dead or not), or ``"all"`` (every live replica at once, as a retrying proxy might). It answers
    with the first replica's answer; ``forwarded`` says where each delivery went.
    """

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self.route: str | int = "alternate"
        self.forwarded: list[Forwarded] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._turn = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/webhook", self._forward)
        self._runner = await serve_locally(app, self.port)

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    def targets(self) -> list[Replica]:
        if isinstance(self.route, int):
            return [self.replicas[self.route]]
        live = [r for r in self.replicas if r.alive]
        if self.route == "all" or not live:
            return live
        self._turn += 1
        return [live[self._turn % len(live)]]

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        targets = self.targets()
        payload = json.loads(body)
        record = Forwarded(request.headers.get("X-Gitea-Delivery", ""), request.headers.get("X-Gitea-Event", ""),
                           payload.get("action", ""), payload.get("sender", {}).get("login", ""),
                           [r.name for r in targets])
        self.forwarded.append(record)
        answers = await asyncio.gather(*(r.post(headers, body) for r in targets), return_exceptions=True)
        for answer in answers:
            record.statuses.append(answer[0] if isinstance(answer, tuple) else 502)
        first = next((a for a in answers if isinstance(a, tuple)), (502, b"no replica answered"))
        return web.Response(status=first[0], body=first[1], content_type="application/json")


@dataclass
class AgentWatch:
    """The most agent containers seen running at once, polled on the Docker engine."""

    most: int = 0
    most_per: dict[str, int] = field(default_factory=dict)  # replica name -> the most on it at once
    samples: int = 0
    seen: set[str] = field(default_factory=set)  # every agent container's name seen running


class Cluster:
    def __init__(self, world: dict, agent_image: str, count: int = 2, **env: str) -> None:
        self.world = world
        self.forge = world["forge"]
        self.postgres = PostgresServer()
        self.store_url = ""
        root: Path = world["tmp"]
        base = {
            "DISPATCHBOT_IMAGE": agent_image,
            "DISPATCHBOT_LIMITS": json.dumps({"memory": "256m", "cpus": 1.0, "pids": 256, "timeout": 120.0,
                                              "grace": 1.0}),
            "DISPATCHBOT_GATEWAY__PORT": "0",  # replicas on one host: ports of their own
            "DISPATCHBOT_GATEWAY__PROXY_PORT": "0",
            **AGENT_KEYS,
            **env,
        }
        self._env = base
        self.replicas = [
            Replica(f"bot-{n + 1}", self.forge.url, world["bot"].token, root / f"replica-{n + 1}" / "data", **base)
            for n in range(count)
        ]
        self.balancer = Balancer(self.replicas)
        self.docker = DockerExecutor()
        self._store = None

    async def start(self) -> None:
        await asyncio.to_thread(self.postgres.start)
        self.store_url = self.postgres.create_database()
        for replica in self.replicas:
            replica.env["DISPATCHBOT_STORE_URL"] = self.store_url
        await self.balancer.start()
        # One at a time: the first creates the schema, the next finds it.
        for replica in self.replicas:
            await replica.start()
        self.forge.add_hook(self.world["repo"], url=self.balancer.url + "/webhook", secret=SECRET)

    async def close(self) -> None:
        """Stop everything this cluster started, and remove what a failed test left on the engine."""
        try:
            await asyncio.gather(*(r.stop() for r in self.replicas))
            await self.balancer.stop()
            if self._store is not None:
                await self._store.close()
            for replica in self.replicas:
                for info in await self.docker.list(f"{INSTANCE_LABEL}={replica.instance}"):
                    await self.docker.remove(info.id)
                await dismantle(self.docker, Settings(data_dir=replica.data_dir, gateway={"port": 0, "proxy_port": 0}))
        finally:
            await self.docker.close()
            await asyncio.to_thread(self.postgres.close)

    # The shared store ---------------------------------------------------------------------------

    async def store(self):
        """The cluster's store, opened once from the test process (it listens like a replica)."""
        if self._store is None:
            self._store = await open_store(self.store_url)
        return self._store

    async def runs(self, states: tuple[str, ...] | None = None) -> list[Run]:
        return await (await self.store()).runs(states=states)

    async def moves(self, run_id: int) -> list[str]:
        """The states the run was moved to, in order."""
        return [change.to_state for change in await (await self.store()).history(run_id)]

    async def wait_runs(self, predicate: Callable[[list[Run]], bool], timeout: float = 120.0) -> list[Run]:
        """Poll the store until ``predicate(all runs)`` holds; the runs. Fails at once if a replica died."""

        async def holds():
            self.check_alive()
            runs = await self.runs()
            return runs if predicate(runs) else None

        return await wait_for(holds, timeout=timeout, interval=0.2)

    def check_alive(self, *, but: tuple[Replica, ...] = ()) -> None:
        """Every replica not in ``but`` still runs (else the end of its log)."""
        for replica in self.replicas:
            if replica not in but and replica.proc is not None and not replica.alive:
                raise AssertionError(f"replica {replica.name} died:\n{replica.log_text()[-3000:]}")

    # The Docker engine --------------------------------------------------------------------------

    async def agent_containers(self, *replicas: Replica) -> list[ContainerInfo]:
        """The running agent containers of these replicas (default: all), by their labels."""
        found = []
        for replica in replicas or self.replicas:
            for info in await self.docker.list(f"{INSTANCE_LABEL}={replica.instance}"):
                if info.running and info.labels.get(ROLE_LABEL) == "agent":
                    found.append(info)
        return found

    @asynccontextmanager
    async def watch_agents(self, interval: float = 0.05) -> AsyncIterator[AgentWatch]:
        """While the block runs, poll the engine for running agent containers across the cluster."""
        watch = AgentWatch()
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                running = await self.agent_containers()
                watch.most = max(watch.most, len(running))
                for replica in self.replicas:
                    on = sum(1 for c in running if c.labels.get(INSTANCE_LABEL) == replica.instance)
                    watch.most_per[replica.name] = max(watch.most_per.get(replica.name, 0), on)
                watch.samples += 1
                watch.seen.update(c.name for c in running)
                await asyncio.sleep(interval)

        task = asyncio.create_task(poll())
        try:
            yield watch
        finally:
            stop.set()
            await task

    def docker_ps(self) -> list[str]:
        """Every container of the cluster, running or not (for a failure's message)."""
        names = []
        for replica in self.replicas:
            out = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}} {{.Status}}", "--filter",
                                  f"label={INSTANCE_LABEL}={replica.instance}"], capture_output=True, text=True)
            names += out.stdout.splitlines()
        return names


@pytest.fixture
async def replicas(world, agent_image) -> AsyncIterator[Callable[..., Cluster]]:
    """Start a cluster: ``await replicas(count=2, **env)`` (env: more DISPATCHBOT_* settings for every
    replica, e.g. ``DISPATCHBOT_MAX_RUNNING="3"``); all of it is stopped and removed afterwards."""
    started: list[Cluster] = []

    async def start(count: int = 2, **env: str) -> Cluster:
        cluster = Cluster(world, agent_image, count, **env)
        started.append(cluster)
        await cluster.start()
        return cluster

    yield start
    for cluster in started:
        await cluster.close()
