"""Network namespaces on the closed network, started before the containers that will use them.

A container started on a user-defined Docker network waits at its start while Docker sets up its
end of the network (a veth pair, the embedded DNS's rules inside it): here 200 ms against 160 ms on
the default bridge, which put webhook → agent running 13 % above the open network's. A container
that joins a running container's namespace (``container:<id>``) starts in 60 ms. So the gateway keeps
``gateway.warm`` holders ready, each a sleeping container on the closed network with nothing
mounted, no capabilities and a few MB, and gives each to one container of a run; the executor
removes it with that container. A holder serves one container only: two containers never share a
namespace, so they cannot reach each other over loopback.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from bot.executor.docker import HOLDER_LABEL, ContainerSpec, DockerExecutor, ExecutorError
from bot.runs.containers import INSTANCE_LABEL
from bot.settings import Limits, Settings
from bot.tasks import cancel

log = logging.getLogger(__name__)

HOLD = ["sleep", "2147483647"]  # GNU's and busybox's sleep both take it; "infinity" only GNU's
LIMITS = Limits(memory="16m", cpus=0.1, pids=4, log_bytes=4096, user="65534:65534")
# No name server answers on the closed network (Docker's embedded one forwards nothing from an
# internal network): with these, a lookup fails after 2 s instead of 20, which a tool that ignores
# the proxy would otherwise wait at each name.
DNS_OPTIONS = ["timeout:1", "attempts:1"]


class Holders:
    def __init__(self, executor: DockerExecutor, settings: Settings, network: str) -> None:
        self.executor = executor
        self.network = network
        self.image = settings.image  # the default agent image: it is there whenever runs can start
        self.instance = settings.instance
        self.warm = settings.gateway.warm
        self._ready: list[str] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._failure = ""  # the last reason a holder could not start, logged once

    @property
    def ready(self) -> tuple[str, ...]:
        return tuple(self._ready)

    def take(self) -> str | None:
        """A ready holder's container id, now the caller's; None when none is ready."""
        return self._ready.pop(0) if self._ready else None

    def refill(self) -> None:
        """Start holders in the background until ``warm`` are ready or on their way."""
        for _ in range(self.warm - len(self._ready) - len(self._starting)):
            task = asyncio.get_running_loop().create_task(self._start(), name="network-holder")
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def _start(self) -> None:
        spec = ContainerSpec(
            name=f"dispatchbot-{self.instance}-holder-{secrets.token_hex(4)}", image=self.image, argv=HOLD,
            workdir="/", mounts=[], env={}, labels={HOLDER_LABEL: self.instance}, limits=LIMITS,
            network=self.network, extra_hosts=[], dns_options=DNS_OPTIONS,
        )
        try:
            if await self.executor.image(self.image) is None:
                return  # runs cannot start either, and preflight says why
            self._ready.append(await self.executor.start(spec))
        except ExecutorError as e:
            if str(e) != self._failure:
                log.warning("no network namespace made ready ahead (containers join the network themselves, "
                            "%s): %s", "about 60 ms slower each", e)
            self._failure = str(e)

    async def clean(self) -> None:
        """Remove this bot's holders that no container uses: those a crash left, or a previous
        process's ready ones. A re-adopted run's container keeps its own."""
        used = {c.network.removeprefix("container:")
                for c in await self.executor.list(f"{INSTANCE_LABEL}={self.instance}")}
        for holder in await self.executor.list(f"{HOLDER_LABEL}={self.instance}"):
            if holder.id not in used:
                await self.executor.remove(holder.id)

    async def close(self) -> None:
        """The ready holders go (taken ones go with their containers)."""
        await cancel(self._starting)
        while (holder := self.take()) is not None:
            await self.executor.remove(holder)
