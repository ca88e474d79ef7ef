"""``GET /metrics``: the bot in Prometheus' text format, one registry per application.

What is state (runs queued and active per pool and per replica, the replicas alive and lost, the
outbox and delivery backlogs) is read from the store when scraped; so are the model calls, tokens and cost the gateway metered, summed per agent
and model from the store's usage records, so that every replica sharing a store shows the cluster's. What is an event is counted where it happens, once: the front door counts
deliveries, the Forge client its calls by status class, the executor its failed starts. Runs are
counted from the store's transition log, the one record of every state change: each scrape reads
the transitions since the last one, so no code path that moves a run can forget to count it.
Counters start at zero with each process, as Prometheus expects of counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.admin.replicas import ReplicasView, replicas_view
from bot.executor.docker import DockerExecutor
from bot.forge.client import Forge
from bot.settings import Settings
from bot.store import ACTIVE, TERMINAL, Census, ModelUsage, Store, UsageTotal

CONTENT_TYPE = CONTENT_TYPE_LATEST
PAGE = 5000  # transitions read per query while catching up
DURATION_BUCKETS = (10, 30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 5400, 7200)
LATENCY_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600)
FORGE_CLASSES = ("2xx", "3xx", "4xx", "5xx", "none")


class Metrics:
    def __init__(
        self, settings: Settings, store: Store, forge: Forge, executor: DockerExecutor,
        after_transition: tuple[float, int],
    ) -> None:
        """``after_transition``: the last transition already stored, so only this process's are counted."""
        self._settings = settings
        self._store = store
        self._cursor = after_transition
        self._lock = asyncio.Lock()  # two scrapes at once must not count a transition twice
        self.registry = registry = CollectorRegistry()
        self.deliveries = Counter(
            "dispatchbot_deliveries", "Webhook deliveries by what the front door did with them",
            ["outcome"], registry=registry,
        )
        self.runs_started = Counter(
            "dispatchbot_runs_started", "Runs whose agent container started running", ["agent"], registry=registry
        )
        self.runs_ended = Counter(
            "dispatchbot_runs_ended", "Runs that reached an outcome (blocked included)",
            ["agent", "outcome"], registry=registry,
        )
        self.run_duration = Histogram(
            "dispatchbot_run_duration_seconds", "From the agent container's start to the run's outcome",
            ["agent"], buckets=DURATION_BUCKETS, registry=registry,
        )
        self.start_latency = Histogram(
            "dispatchbot_webhook_to_running_seconds",
            "From the arrival of the delivery that asked for a run to its agent container running",
            buckets=LATENCY_BUCKETS, registry=registry,
        )
        self._state = _State(forge, executor)
        registry.register(self._state)

    @classmethod
    async def create(cls, settings: Settings, store: Store, forge: Forge, executor: DockerExecutor) -> Metrics:
        return cls(settings, store, forge, executor, await store.last_transition())

    async def render(self) -> bytes:
        """The scrape: catch up with the transition log, read the gauges, format everything."""
        async with self._lock:
            await self._count_transitions()
            self._state.census = await self._store.census()
            self._state.replicas = await replicas_view(self._settings, self._store, "")
            self._state.usage = by_agent_and_model(await self._store.usage_totals(0.0))
            return generate_latest(self.registry)  # no await in between: this scrape's census

    async def _count_transitions(self) -> None:
        while events := await self._store.transitions_after(self._cursor, PAGE):
            for e in events:
                if e.to_state == "running":
                    self.runs_started.labels(e.agent).inc()
                    if e.first_start:  # a resumed run's request is long past
                        self.start_latency.observe(max(0.0, e.at - e.requested_at))
                elif e.to_state in TERMINAL:
                    self.runs_ended.labels(e.agent, e.to_state).inc()
                    if e.running_since is not None:
                        self.run_duration.labels(e.agent).observe(max(0.0, e.at - e.running_since))
            self._cursor = (events[-1].at, events[-1].id)


def by_agent_and_model(totals: list[UsageTotal]) -> dict[tuple[str, str], ModelUsage]:
    """All repositories' usage, per agent and model."""
    summed: dict[tuple[str, str], ModelUsage] = {}
    for total in totals:
        for part in total.usage.by_model:
            key = (total.agent, part.model)
            summed[key] = summed[key] + part if key in summed else part
    return summed


class _State(Collector):
    """Gauges from the store's census, and the counts the Forge client and the executor keep."""

    def __init__(self, forge: Forge, executor: DockerExecutor) -> None:
        self._forge = forge
        self._executor = executor
        self.census = Census({}, 0, 0)
        self.replicas = ReplicasView(ttl=0.0, max_running=0, replicas=[])
        self.usage: dict[tuple[str, str], ModelUsage] = {}

    def collect(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily("dispatchbot_queue_depth", "Runs waiting in the queue", labels=["pool"])
        active = GaugeMetricFamily(
            "dispatchbot_active_runs", "Runs being prepared, run, checked or harvested", labels=["pool"]
        )
        per_pool: dict[str, list[int]] = {}
        for (pool, state), n in self.census.live.items():
            counts = per_pool.setdefault(pool, [0, 0])
            counts[state in ACTIVE] += n
        for pool, (waiting, working) in sorted(per_pool.items()):
            queued.add_metric([pool], waiting)
            active.add_metric([pool], working)
        yield queued
        yield active
        yield from self._replicas()
        yield GaugeMetricFamily("dispatchbot_outbox_backlog", "Forge writes not yet done", value=self.census.outbox)
        yield GaugeMetricFamily(
            "dispatchbot_deliveries_pending", "Recorded deliveries not yet handled", value=self.census.deliveries
        )
        calls = CounterMetricFamily("dispatchbot_forge_calls", "Forge API calls by status class", labels=["status"])
        for status in FORGE_CLASSES:
            calls.add_metric([status], self._forge.calls[status])
        yield calls
        yield CounterMetricFamily(
            "dispatchbot_container_start_failures", "Containers that could not be created or started",
            value=self._executor.start_failures,
        )
        yield from self._usage()

    def _usage(self) -> Iterator[Metric]:
        labels = ["agent", "model"]
        calls = CounterMetricFamily("dispatchbot_model_calls", "Model calls the gateway metered", labels=labels)
        tokens = CounterMetricFamily(
            "dispatchbot_model_tokens", "Tokens of metered model calls: input (cached included), output "
            "(reasoning included), cached, reasoning", labels=[*labels, "kind"],
        )
        cost = CounterMetricFamily(
            "dispatchbot_model_cost_usd", "What metered model calls cost, in USD, from the price table "
            "(a model with no price has none)", labels=labels,
        )
        for (agent, model), used in sorted(self.usage.items()):
            calls.add_metric([agent, model], used.calls)
            for kind, n in (("input", used.input_tokens), ("output", used.output_tokens),
                            ("cached", used.cached_tokens), ("reasoning", used.reasoning_tokens)):
                tokens.add_metric([agent, model, kind], n)
            if used.cost_usd is not None:
                cost.add_metric([agent, model], used.cost_usd)
        yield from (calls, tokens, cost)

    def _replicas(self) -> Iterator[Metric]:
        count = GaugeMetricFamily("dispatchbot_replicas", "Replicas sharing the store, alive or lost", labels=["state"])
        alive = self.replicas.alive
        count.add_metric(["alive"], alive)
        count.add_metric(["lost"], len(self.replicas.replicas) - alive)
        yield count
        running = GaugeMetricFamily("dispatchbot_replica_active_runs", "Active runs per replica", labels=["replica"])
        limit = GaugeMetricFamily("dispatchbot_replica_max_running", "Each replica's own limit", labels=["replica"])
        for r in self.replicas.replicas:
            running.add_metric([r.id], len(r.runs))
            limit.add_metric([r.id], r.max_running)
        yield running
        yield limit


METRICS = web.AppKey("metrics", Metrics)  # owned by the app: the webhook counts deliveries, /metrics reads
