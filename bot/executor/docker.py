"""The Docker adapter: containers as labelled cattle, knowing nothing of runs (``bot.runs.containers``
says what a run's containers are). Building images is ``bot.image``'s, through its own client.

Every container is created with hard limits (memory without swap, CPUs, pids, a bounded log), an init
process so SIGTERM reaches the process, ``no-new-privileges``, all capabilities dropped but the
configured ones, and the configured user. What a restart needs is in Docker, not in memory: ``wait``
takes an absolute deadline so a container re-adopted after a restart keeps its original wall clock,
and ``list`` finds containers by label. (Only ``_killed`` lives in memory: after a restart the exit
code, 128+signal, tells the same.) A container may join the network namespace of a *holder* (a
container labelled ``HOLDER_LABEL`` that only keeps a namespace up for it): the holder goes with it.

aiodocker pitfalls handled here: its per-call timeouts only honour floats (we use ``asyncio.timeout``
instead); a failed ``start`` leaves the created container behind (we remove it); its log reader decodes
text and drops undecodable bytes (we read the raw multiplexed stream ourselves).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker
import aiohttp
from aiodocker.containers import DockerContainer

from bot.settings import Limits

# Short API calls fail after this; long ones (wait, logs) are bounded by their callers.
API_TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=10)
# How long a SIGKILLed container may take to be reported dead before we give up on it.
KILL_SETTLE = 30.0
# The json-file driver stores each line with JSON overhead; keep ~2x the raw budget, in two files.
LOG_FILES = 2

# A container that only holds a network namespace for one other, which joins it (``container:<id>``).
HOLDER_LABEL = "dispatchbot.holder"

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s?([kmgtp]?)i?b?$", re.IGNORECASE)


class ExecutorError(Exception):
    """A container could not be created, started or examined; the message says why."""


@dataclass(frozen=True)
class Mount:
    """A host path bind-mounted into the container; the source must exist."""

    source: Path
    target: str
    read_only: bool = False


@dataclass
class ContainerSpec:
    """Everything needed to start one container. Secrets belong in ``env`` only."""

    name: str  # unique on the engine
    image: str
    argv: list[str]  # run exactly, never through a shell; the image's entrypoint is ignored
    workdir: str  # in-container working directory (the clone)
    mounts: list[Mount]
    env: dict[str, str]  # already allow-listed by the caller
    labels: dict[str, str]  # what finds the container again (``list``)
    limits: Limits
    extra_hosts: list[str] = field(default_factory=lambda: ["host.docker.internal:host-gateway"])
    network: str | None = None
    dns_options: list[str] = field(default_factory=list)  # resolv.conf's options (not with a joined network)


@dataclass(frozen=True)
class Exit:
    """How a container ended."""

    code: int | None  # None when it never ran or vanished
    oom_killed: bool = False
    timed_out: bool = False
    killed: bool = False  # stopped by us (cancel, timeout) or by a signal
    error: str = ""  # human-readable reason when not a clean exit 0


@dataclass(frozen=True)
class ImageInfo:
    """An image on the engine, for checks before a container starts."""

    id: str
    labels: dict[str, str]


@dataclass(frozen=True)
class ContainerInfo:
    """A container found by label, for re-adoption and reaping."""

    id: str
    name: str
    labels: dict[str, str]
    created: float  # epoch seconds
    running: bool
    network: str = ""  # Docker's network mode: a network's name, or ``container:<id>`` of a holder


def parse_bytes(size: str) -> int:
    """``"4g"``, ``"512m"``, ``"1.5GiB"``, ``"1024"`` -> bytes, with Docker's binary units."""
    match = _SIZE.match(size.strip())
    if not match:
        raise ExecutorError(f"invalid size {size!r}: expected a number with an optional k/m/g/t unit")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def container_config(spec: ContainerSpec) -> dict[str, Any]:
    """The Docker create body for ``spec``; pure, so tests and reviewers can read it directly."""
    limits = spec.limits
    memory = parse_bytes(limits.memory)
    host: dict[str, Any] = {
        "Init": True,
        "SecurityOpt": ["no-new-privileges"],
        "CapDrop": ["ALL"],
        "CapAdd": list(limits.cap_add),
        "Memory": memory,
        "MemorySwap": memory,
        "NanoCpus": int(limits.cpus * 1e9),
        "PidsLimit": limits.pids,
        "ExtraHosts": list(spec.extra_hosts),
        # Mounts (not Binds): a missing source is an error instead of a root-owned empty directory.
        "Mounts": [
            {"Type": "bind", "Source": str(m.source), "Target": m.target, "ReadOnly": m.read_only}
            for m in spec.mounts
        ],
        "LogConfig": {
            "Type": "json-file",
            "Config": {"max-size": str(2 * limits.log_bytes), "max-file": str(LOG_FILES)},
        },
        "AutoRemove": False,
    }
    if spec.network:
        host["NetworkMode"] = spec.network
    if spec.dns_options:
        host["DnsOptions"] = list(spec.dns_options)
    return {
        "Image": spec.image,
        # An empty Entrypoint drops the image's, so argv runs exactly as given.
        "Entrypoint": [],
        "Cmd": list(spec.argv),
        "WorkingDir": spec.workdir,
        "Env": [f"{k}={v}" for k, v in spec.env.items()],
        "Labels": dict(spec.labels),
        "User": limits.user,
        "Tty": False,
        "OpenStdin": False,
        "AttachStdin": False,
        "AttachStdout": False,
        "AttachStderr": False,
        "HostConfig": host,
    }


def exit_from_state(state: dict[str, Any], *, timed_out: bool = False, killed: bool = False) -> Exit:
    """Turn Docker's ``State`` into an ``Exit``; exit codes above 128 mean a signal (init reports 128+n)."""
    if state.get("Status") == "created":
        return Exit(code=None, error=state.get("Error") or "the container never started")
    code = state.get("ExitCode")
    oom = bool(state.get("OOMKilled"))
    signal = code - 128 if code is not None and code > 128 else None
    killed = killed or timed_out or signal is not None
    if timed_out:
        error = "timed out: stopped at the deadline"
    elif oom:
        error = "killed: out of memory"
    elif killed:
        error = f"killed by signal {signal}" if signal else "killed"
    elif code != 0:
        error = state.get("Error") or f"exited with code {code}"
    else:
        error = ""
    return Exit(code=code, oom_killed=oom, timed_out=timed_out, killed=killed, error=error)


class DockerExecutor:
    """Creates, watches, stops, reads and removes containers through one aiodocker client."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._client: aiodocker.Docker | None = None
        self._connector: aiohttp.BaseConnector | None = None
        # Containers this process stopped, so wait() reports them as killed; after a restart the
        # exit code (128+signal) tells the same story.
        self._killed: set[str] = set()
        self.start_failures = 0  # containers that could not be created or started, for the metrics

    @property
    def _docker(self) -> aiodocker.Docker:
        # Created on first use: aiohttp wants a running event loop.
        if self._client is None:
            host = self._url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
            if host.startswith("unix://"):
                # Every watched container holds a connection for its whole life: aiohttp's default
                # pool of 100 would stall the 101st run, and every other call behind it.
                self._connector = aiohttp.UnixConnector(host.removeprefix("unix://"), limit=0)
                self._client = aiodocker.Docker(url="unix://localhost", connector=self._connector, timeout=API_TIMEOUT)
            else:
                self._client = aiodocker.Docker(url=self._url, timeout=API_TIMEOUT)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._connector is not None:
            await self._connector.close()
            self._connector = None

    async def ping(self) -> bool:
        try:
            async with asyncio.timeout(5):
                await self._docker.version()
            return True
        except (aiodocker.DockerError, aiohttp.ClientError, OSError, TimeoutError, ValueError):
            return False

    async def image(self, name: str) -> ImageInfo | None:
        """The image's id and labels; None when the engine has no image of that name."""
        try:
            info = await self._docker.images.inspect(name)
        except aiodocker.DockerError as e:
            if e.status == 404:
                return None
            raise ExecutorError(f"cannot inspect image {name!r}: {e.message}") from e
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ExecutorError(f"the Docker engine did not answer inspecting image {name!r}: {e!r}") from e
        return ImageInfo(id=info["Id"], labels=(info.get("Config") or {}).get("Labels") or {})

    async def start(self, spec: ContainerSpec) -> str:
        """Create and start; on any failure after create the container is removed before raising."""
        try:
            return await self._start(spec)
        except ExecutorError:
            self.start_failures += 1
            raise

    async def _start(self, spec: ContainerSpec) -> str:
        try:
            container = await self._docker.containers.create(container_config(spec), name=spec.name)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ExecutorError(f"the Docker engine did not answer creating {spec.name!r}: {e!r}") from e
        except aiodocker.DockerError as e:
            if e.status == 404 and "image" in e.message.lower():
                raise ExecutorError(
                    f"image {spec.image!r} is not present on the Docker host: build or pull it"
                ) from e
            if e.status == 409:
                raise ExecutorError(f"a container named {spec.name!r} already exists: {e.message}") from e
            raise ExecutorError(f"cannot create container {spec.name!r}: {e.message}") from e
        try:
            await container.start()
        except BaseException as e:
            # Also on cancellation: a created-but-unstarted container would be an orphan.
            await asyncio.shield(self.remove(container.id))
            if isinstance(e, aiodocker.DockerError):
                raise ExecutorError(f"cannot start container {spec.name!r}: {e.message}") from e
            raise
        return container.id

    async def wait(self, container_id: str, deadline: float, grace: float) -> Exit:
        """Wait for the container to stop; at ``deadline`` (epoch s) stop it with ``grace``.

        Works whether the container is running (freshly started or re-adopted) or already stopped.
        """
        container = self._docker.containers.container(container_id)
        timed_out = False
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time())):
                await container.wait()
        except TimeoutError:
            # A re-adopted container may have finished before its deadline while we were away.
            state = await self.inspect_state(container_id)
            if state is not None and state.get("Running"):
                timed_out = True
                await self.kill(container_id, grace)
        except aiodocker.DockerError as e:
            if e.status != 404:
                raise ExecutorError(f"cannot wait for container {container_id[:12]}: {e.message}") from e
        except aiohttp.ClientError as e:
            # E.g. the daemon restarted mid-wait; the container may well be alive: wait again.
            raise ExecutorError(f"lost the connection while waiting for {container_id[:12]}: {e}") from e
        state = await self.inspect_state(container_id)
        if state is None:
            return Exit(code=None, timed_out=timed_out, error="the container vanished")
        return exit_from_state(state, timed_out=timed_out, killed=container_id in self._killed)

    async def kill(self, container_id: str, grace: float) -> None:
        """SIGTERM, up to ``grace`` seconds, then SIGKILL. Idempotent: a stopped or gone container is fine."""
        container = self._docker.containers.container(container_id)
        if not await self._signal(container, "SIGTERM"):
            return
        self._killed.add(container_id)
        try:
            async with asyncio.timeout(grace):
                await container.wait()
            return
        except TimeoutError:
            pass
        except aiodocker.DockerError:
            return  # removed meanwhile
        if not await self._signal(container, "SIGKILL"):
            return
        try:
            async with asyncio.timeout(KILL_SETTLE):
                await container.wait()
        except TimeoutError as e:
            raise ExecutorError(f"container {container_id[:12]} survived SIGKILL for {KILL_SETTLE}s") from e
        except aiodocker.DockerError:
            pass

    async def _signal(self, container: DockerContainer, signal: str) -> bool:
        """Send ``signal``; False when there was nothing to signal (not running, or gone)."""
        try:
            await container.kill(signal=signal)
            return True
        except aiodocker.DockerError as e:
            if e.status in (404, 409):
                return False
            raise ExecutorError(f"cannot send {signal} to {container.id[:12]}: {e.message}") from e

    async def logs(self, container_id: str, *, stdout: bool = True, stderr: bool = True, limit: int) -> bytes:
        """The LAST ``limit`` bytes of the chosen streams, interleaved in write order, exactly as written.

        The tail is what matters in agent logs (the summary, the final error). A result of exactly
        ``limit`` bytes may have been cut at the front, possibly mid-character. Memory stays O(limit).
        """
        if limit <= 0 or not (stdout or stderr):
            return b""
        params = {"stdout": stdout, "stderr": stderr, "follow": False}
        tail = bytearray()
        try:
            # aiodocker's own reader decodes text; the raw stream keeps bytes exact.
            async with self._docker._query(f"containers/{container_id}/logs", params=params) as response:
                async for chunk in _demultiplex(response.content):
                    tail += chunk
                    if len(tail) > 2 * limit:
                        del tail[:-limit]
        except aiodocker.DockerError as e:
            raise ExecutorError(f"cannot read logs of {container_id[:12]}: {e.message}") from e
        return bytes(tail[-limit:])

    async def follow(self, container_id: str, *, tail: int) -> AsyncIterator[bytes]:
        """The last ``tail`` lines of the container's output, then what it writes until it stops.

        One streaming request for as long as the caller reads (the dashboard's live log): bounded by
        the caller, so no total timeout here.
        """
        params = {"stdout": True, "stderr": True, "follow": True, "tail": str(tail)}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        try:
            async with self._docker._query(
                f"containers/{container_id}/logs", params=params, timeout=timeout
            ) as response:
                async for chunk in _demultiplex(response.content):
                    yield chunk
        except aiodocker.DockerError as e:
            if e.status != 404:  # a container gone has nothing more to say
                raise ExecutorError(f"cannot follow logs of {container_id[:12]}: {e.message}") from e

    async def remove(self, container_id: str) -> None:
        """Force-remove the container and its anonymous volumes, and return once it is gone: only
        then is its workspace free. A gone container is fine. Its network holder goes too."""
        holder = await self._holder(container_id)
        await self._delete(container_id)
        if holder is not None:
            await self._delete(holder)

    async def _delete(self, container_id: str) -> None:
        try:
            await self._docker.containers.container(container_id).delete(force=True, v=True)
        except aiodocker.DockerError as e:
            if e.status == 409:  # a removal is already in progress: wait for its end
                await self._gone(container_id)
            elif e.status != 404:
                raise ExecutorError(f"cannot remove container {container_id[:12]}: {e.message}") from e
        self._killed.discard(container_id)

    async def _holder(self, container_id: str) -> str | None:
        """The holder whose network namespace the container joined, if it has one."""
        try:
            mode = (await self._docker.containers.get(container_id))["HostConfig"].get("NetworkMode") or ""
            if not mode.startswith("container:"):
                return None
            holder = await self._docker.containers.get(mode.removeprefix("container:"))
        except aiodocker.DockerError:
            return None  # gone: nothing to remove with it
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ExecutorError(f"the Docker engine did not answer inspecting {container_id[:12]}: {e!r}") from e
        return holder.id if HOLDER_LABEL in (holder["Config"].get("Labels") or {}) else None

    async def _gone(self, container_id: str) -> None:
        try:
            async with asyncio.timeout(KILL_SETTLE):
                await self._docker.containers.container(container_id).wait(condition="removed")
        except aiodocker.DockerError:
            pass  # gone already
        except TimeoutError as e:
            raise ExecutorError(f"container {container_id[:12]} was still being removed after {KILL_SETTLE}s") from e

    async def list(self, label: str) -> list[ContainerInfo]:
        """Every container, running or not, carrying ``label`` (``key`` or ``key=value``)."""
        filters = json.dumps({"label": [label]})
        containers = await self._docker.containers.list(all=True, filters=filters)
        return [
            ContainerInfo(
                id=c["Id"],
                name=(c["Names"] or ["/"])[0].lstrip("/"),
                labels=c["Labels"] or {},
                created=float(c["Created"]),
                running=c["State"] == "running",
                network=(c["HostConfig"] if "HostConfig" in c else {}).get("NetworkMode", ""),
            )
            for c in containers
        ]

    async def writable_layer(self, container_id: str) -> Path | None:
        """Where the container's own writes to its root file system land on this host (overlay2's
        upper directory); None for another storage driver, or when that path is not visible here."""
        try:
            info = await self._docker.containers.get(container_id)
        except aiodocker.DockerError as e:
            raise ExecutorError(f"cannot inspect container {container_id[:12]}: {e.message}") from e
        driver = info["GraphDriver"] or {}
        upper = (driver.get("Data") or {}).get("UpperDir") if driver.get("Name") == "overlay2" else None
        return Path(upper) if upper and os.path.isdir(upper) else None  # noqa: ASYNC240 (one stat)

    async def network(self, name: str, options: dict[str, str]) -> str:
        """The host's address on the internal bridge network ``name``, created with ``options`` if missing.

        ``internal``: Docker gives it no route out (no masquerade, isolation rules in FORWARD).
        """
        try:
            try:
                info = await self._docker.networks.get(name)
                found = await info.show()
            except aiodocker.DockerError as e:
                if e.status != 404:
                    raise
                config = {"Name": name, "Driver": "bridge", "Internal": True, "Options": options,
                          "CheckDuplicate": True, "Labels": {"dispatchbot.network": name}}
                try:
                    created = await self._docker.networks.create(config)
                except aiodocker.DockerError as e:
                    if e.status != 409:  # 409: created meanwhile, by another bot process of this data dir
                        raise
                    created = await self._docker.networks.get(name)
                found = await created.show()
        except aiodocker.DockerError as e:
            raise ExecutorError(f"cannot set up the Docker network {name!r}: {e.message}") from e
        if not found.get("Internal") or found.get("Options", {}) != options:
            raise ExecutorError(f"the Docker network {name!r} exists but is not the bot's internal network "
                                f"(internal, {options}): remove it or name another one")
        configs = (found.get("IPAM") or {}).get("Config") or []
        if not configs or not configs[0].get("Gateway"):
            raise ExecutorError(f"the Docker network {name!r} has no gateway address")
        return configs[0]["Gateway"]

    async def remove_network(self, name: str) -> bool:
        """Remove the network; False when it is still in use (a container of a run kept going)."""
        try:
            await (await self._docker.networks.get(name)).delete()
        except aiodocker.DockerError as e:
            if e.status == 404:
                return True
            if e.status in (403, 409) or "active endpoints" in e.message:
                return False
            raise ExecutorError(f"cannot remove the Docker network {name!r}: {e.message}") from e
        return True

    async def inspect_state(self, container_id: str) -> dict[str, Any] | None:
        """Docker's ``State`` of the container (Status, ExitCode, OOMKilled, ...), or None if it is gone."""
        try:
            info = await self._docker.containers.get(container_id)
        except aiodocker.DockerError as e:
            if e.status == 404:
                return None
            raise ExecutorError(f"cannot inspect container {container_id[:12]}: {e.message}") from e
        return info["State"]


async def _demultiplex(stream: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """Payloads of Docker's multiplexed log frames: 8-byte header (stream, 3 pad, big-endian length)."""
    while True:
        try:
            header = await stream.readexactly(8)
        except asyncio.IncompleteReadError:
            return
        (length,) = struct.unpack(">4xL", header)
        yield await stream.readexactly(length)
