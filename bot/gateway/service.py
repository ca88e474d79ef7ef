"""The gateway as the bot runs it: its network, its two listeners, and what each container is given.

One Docker network per bot (internal, no inter-container traffic, a fixed bridge name); the gateway
listens on the host's address on that bridge, and the firewall lets the bridge reach those two ports
and nothing else; a run's container joins a namespace made ready on that network ahead (``holders``).
With ``egress = "open"`` containers stay on ``container_network`` as before, but still reach their
model through the gateway (at the same address, routed by the host): keys never enter a container in
either mode.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

from bot.executor.docker import ContainerSpec, DockerExecutor, ExecutorError
from bot.gateway import firewall
from bot.gateway.grants import Grants, Holder, load_key
from bot.gateway.holders import DNS_OPTIONS, Holders
from bot.gateway.models import ModelProxy
from bot.gateway.observer import NoObserver, Observer
from bot.gateway.proxy import Proxy, add_refused
from bot.gateway.sockets import Sockets
from bot.gateway.vendors import VENDORS, key_vendors
from bot.runs.agents import HOME, Agent, resolve
from bot.settings import Settings
from bot.store import Run, Store

log = logging.getLogger(__name__)

# Refused connections are written to their runs' records this long after the first of a burst:
# a script retrying in a loop costs one write per run and second, and a restart loses at most this.
FLUSH_DELAY = 1.0


class GatewayError(Exception):
    """The gateway could not start; the message says why."""


@dataclass(frozen=True)
class Access:
    """What one container gets from the gateway: its environment, its network, the agent to run."""

    env: dict[str, str]
    network: str | None
    extra_hosts: list[str]
    agent: Agent
    credentials_inside: bool = False
    record: dict[str, object] = field(default_factory=dict)  # what the run's result keeps of it


def network_names(settings: Settings) -> tuple[str, str]:
    """(Docker network, bridge interface): a Linux interface name has at most 15 characters."""
    return settings.gateway.network or f"dispatchbot-{settings.instance}", f"dbot-{settings.instance}"


class Gateway:
    def __init__(self, settings: Settings, store: Store, executor: DockerExecutor,
                 observer: Observer | None = None, environ: Mapping[str, str] = os.environ) -> None:
        self.settings = settings
        self.executor = executor
        self.environ = environ
        self.store = store
        self.grants = Grants(load_key(settings.data_dir), store)
        self.sockets = Sockets(settings.gateway)  # both listeners' connections, counted together
        self.proxy = Proxy(self.grants, self._allowlist, settings.gateway, self._refused, self.sockets)
        self.models = ModelProxy(settings, self.grants, observer or NoObserver(), self._upstream_failed, environ,
                                 refused=self.proxy.count_refused, sockets=self.sockets)
        self.network, self.bridge = network_names(settings)
        self.holders = Holders(executor, settings, self.network)
        self.address = ""
        self.port = self.proxy_port = 0
        self._servers: list[asyncio.Server] = []
        self._failures: dict[int, str] = {}
        self._lock = asyncio.Lock()
        self._records = asyncio.Lock()  # one writer of a run's egress record at a time
        self._flusher: asyncio.Task[None] | None = None

    async def ready(self) -> None:
        """Started, once: at the bot's start, or at the first container when Docker was away then.
        Raises GatewayError with the reason."""
        async with self._lock:
            if not self._servers:
                try:
                    await self._start()
                except (ExecutorError, firewall.FirewallError, OSError) as e:
                    await self._close_listeners()
                    raise GatewayError(f"the model gateway cannot start: {e}") from e

    async def _start(self) -> None:
        options = {"com.docker.network.bridge.name": self.bridge, "com.docker.network.bridge.enable_icc": "false"}
        self.address = await self.executor.network(self.network, options)
        self._servers.append(await self.models.serve(self.address, self.settings.gateway.port))
        self._servers.append(await self.proxy.serve(self.address, self.settings.gateway.proxy_port))
        self.port, self.proxy_port = (server.sockets[0].getsockname()[1] for server in self._servers)
        await firewall.close(self.bridge, self.address, [self.port, self.proxy_port])
        if self.settings.egress == "gateway":
            await self.holders.clean()
            self.holders.refill()
        log.info("model gateway on %s:%d, proxy on :%d, network %s (egress %s)",
                 self.address, self.port, self.proxy_port, self.network, self.settings.egress)

    async def _close_listeners(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []
        await self.models.unserve()

    async def stop(self) -> None:
        """Listeners go; the network and its firewall go too unless a container still uses them
        (a run the next start re-adopts keeps its closed network)."""
        await self._close_listeners()
        await self.models.close()
        await self.holders.close()
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()
        if self.address:
            await dismantle(self.executor, self.settings)

    async def start(self, spec: ContainerSpec) -> str:
        """Start a run's container; on the closed network in a ready holder's namespace when there
        is one (see ``holders``), joining the network itself otherwise or when that fails."""
        if spec.network != self.network:
            return await self.executor.start(spec)
        holder = self.holders.take()
        try:
            if holder is not None:
                try:
                    return await self.executor.start(replace(spec, network=f"container:{holder}"))
                except ExecutorError as e:
                    log.warning("%s: could not join a ready network namespace, joining the network itself: %s",
                                spec.name, e)
                    await self.executor.remove(holder)
            return await self.executor.start(replace(spec, dns_options=DNS_OPTIONS))
        finally:
            self.holders.refill()  # also when none was ready: one that could not start may now

    def revoke(self, run_id: int) -> None:
        """Refuse every later call of this run (e.g. its budget is spent)."""
        self.grants.revoke(run_id)

    def _upstream_failed(self, run_id: int, reason: str) -> None:
        self._failures[run_id] = reason

    def _refused(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(FLUSH_DELAY)
        try:
            await self.flush()
        except Exception:  # the next refusal or the run's end tries again with what is still counted
            log.exception("could not keep the refused connections in the store")

    async def flush(self) -> None:
        """Refused connections counted so far go into their runs' egress records in the store, so a
        restart of the bot in the middle of a run does not lose them."""
        async with self._records:
            for run_id in list(self.proxy.blocked):
                run = await self.store.get(run_id)
                if run is not None:
                    await self.store.update(run_id, result=replace(run.result, egress=self._merged(run)))

    async def keep_record(self, run: Run) -> Run:
        """The run, with the gateway's record of its containers so far kept in its result."""
        async with self._records:
            current = await self.store.get(run.id) or run
            result = replace(current.result, egress=self._merged(current, final=True))
            return await self.store.update(run.id, result=result) or current

    def _merged(self, run: Run, final: bool = False) -> dict[str, object]:
        """The run's stored egress record with the refused connections counted since (and, when
        ``final``, an upstream the gateway could not reach)."""
        record = dict(run.result.egress)
        blocked = dict(record.get("blocked") or {})  # type: ignore[call-overload]
        for destination, count in self.proxy.take_blocked(run.id).items():
            add_refused(blocked, destination, count)
        if blocked:
            record["blocked"] = blocked
        if final and (failure := self._failures.pop(run.id, "")):
            record["upstream"] = failure
        return record

    def _allowlist(self, holder: Holder) -> list[str]:
        """A run's agent with its credentials inside reaches its vendor's hosts only; every other
        container the registries and what its repository adds."""
        own = [f"{self.address}:{self.port}"]  # the gateway itself, for a CLI that proxies every call
        if holder.role == "agent":
            agent = resolve(self.settings, holder.grant.agent)
            if credentials_inside(agent, self.environ):
                return own + vendor_hosts(agent)
        return own + self.settings.gateway.allow + self.settings.egress_allow.get(holder.grant.repo, [])

    def access(self, run: Run, agent: Agent, role: str) -> Access:
        """The environment, network and agent for ``role``'s container of ``run``."""
        token = self.grants.token(run, role)
        gateway_mode = self.settings.egress == "gateway"
        env = {"HOME": HOME}
        if gateway_mode:
            proxy = f"http://run:{token}@{self.address}:{self.proxy_port}"
            env |= {name: proxy for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy",
                                             "npm_config_proxy", "npm_config_https_proxy", "PIP_PROXY")}
            env |= {"NO_PROXY": self.address, "no_proxy": self.address}
        inside = False
        if role == "agent":
            keys = agent.keys(self.environ)
            inside = credentials_inside(agent, self.environ)
            if agent.point is not None and (keys or agent.endpoint or not inside):
                agent = agent.pointed_at(f"http://{self.address}:{self.port}/{agent.name}/{token}")
                env |= agent.container_env({name: token for name in keys})
            else:  # a CLI the gateway cannot stand in for keeps its own keys (and says so)
                env |= agent.container_env(keys if agent.point is None else {})
        record: dict[str, object] = {"mode": self.settings.egress}
        if inside:
            record["credentials_inside"] = True
        return Access(
            env=env,
            network=self.network if gateway_mode else self.settings.container_network,
            extra_hosts=[] if gateway_mode else ["host.docker.internal:host-gateway"],
            agent=agent,
            credentials_inside=inside,
            record=record,
        )


async def dismantle(executor: DockerExecutor, settings: Settings) -> bool:
    """Remove the bot's network and its firewall chain, unless a container still uses the network
    (its unused network holders go first)."""
    network, bridge = network_names(settings)
    await Holders(executor, settings, network).clean()
    if not await executor.remove_network(network):
        return False
    await firewall.remove(bridge)
    return True


def credentials_inside(agent: Agent, environ: Mapping[str, str]) -> bool:
    """A login the gateway cannot keep out of the container: credential dirs, or the keys of a CLI
    that cannot be pointed at the gateway (coderabbit; a custom agent without ``base_url_env``)."""
    return any(os.path.isdir(d) for d in agent.credentials) or (agent.point is None and bool(agent.keys(environ)))


def vendor_hosts(agent: Agent) -> list[str]:
    """What a CLI logged in with its own credentials talks to: its vendors, or its own model API."""
    hosts = [h for v in dict.fromkeys(key_vendors(agent).values()) for h in VENDORS[v].hosts]
    if agent.endpoint:
        url = urlsplit(agent.endpoint)
        hosts.append(f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}")
    return list(dict.fromkeys(hosts))


