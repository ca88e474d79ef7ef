"""The gateway's metering: every model call's usage, read from its answer as it streams past, added to
the run's record in the store, and the run held to its budget.

Plugged into the gateway as its ``Observer``. A run's calls all pass through the gateway of the
replica that started its container, so this replica keeps the run's totals in memory (read from the
store once, for a run adopted after a restart) and decides its budget on them without a store read
per call. The store write happens behind the answer, in order, on one task: an answer never waits
for the store.

Where a run over its budget stops: ``admit`` refuses the call after the one that reached a cap (the
CLI shows the reason and does not retry) and moves the run to ``failed`` with that reason, if it is
still running. That is the whole stop: the runner stops the containers of every run it supervises
that the store says is over (``Runner._stop_ended``), as it does for a ``/cancel``, and the agent's
stage leaves a run that moved on as it is (its workspace kept, so ``/retry`` starts from it with a
fresh budget: usage is kept per run). A store write rather than a call into the runner: it is one
rule for every way a run ends under its container, it holds after a restart, and the Forge shows
the reason from the same write.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, replace

from bot.gateway.observer import Api, Call, Grant, Meter, NoObserver
from bot.settings import Settings
from bot.store import ModelUsage, Store, Usage, utc_day
from bot.usage import actions, budgets, prices
from bot.usage.reader import Reader
from bot.usage.wire import Reading

log = logging.getLogger(__name__)

MAX_RUNS = 10_000  # runs whose totals are kept in memory; past it they are read from the store again
_STREAMED = re.compile(rb'"stream"\s*:\s*true')
_GEMINI_MODEL = re.compile(r"/models/([^/:]+)")
OLLAMA_CALLS = ("/api/chat", "/api/generate")


@dataclass
class Totals:
    """A run's usage so far (its cost None once a call had no price), and what its priced calls cost."""

    used: ModelUsage
    priced_usd: float

    @classmethod
    def of(cls, usage: Usage) -> Totals:
        return cls(usage.total, sum(m.cost_usd or 0.0 for m in usage.by_model))

    def add(self, call: ModelUsage) -> None:
        self.used = self.used + call
        self.priced_usd += call.cost_usd or 0.0


class CallMeter:
    """One call's answer, read as it passes; recorded once it ended."""

    def __init__(self, metering: Metering, grant: Grant, api: Api) -> None:
        self.metering, self.grant = metering, grant
        self.reader = Reader(api)
        self.started = time.monotonic()

    def feed(self, chunk: bytes) -> None:
        self.reader.feed(chunk)

    def finish(self, call: Call, complete: bool) -> None:
        if model_call(call):
            self.metering.record(self.grant, call, self.reader.finish(), time.monotonic() - self.started)


class Metering:
    def __init__(self, settings: Settings, store: Store, clock: budgets.Clock) -> None:
        self.settings, self.store, self.clock = settings, store, clock
        self._secrets = settings.secrets()
        self._used: dict[int, Totals] = {}  # run id -> its totals so far
        self._writes: asyncio.Queue[tuple[int, ModelUsage, str, float, list[str]]] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    # The Observer -------------------------------------------------------------------------

    async def admit(self, grant: Grant, api: Api, body: bytes) -> str | None:
        if api is Api.OTHER:
            return None
        totals = await self._totals(grant.run_id)
        reason = budgets.reached(self.settings.budgets.for_run(grant.agent, grant.pool), totals.used, totals.priced_usd)
        if not reason:
            return None
        if await self.store.transition(grant.run_id, "failed", reason=reason, expect=("running",)):
            log.info("run %s: %s; its container is stopped", grant.run_id, reason)
        return reason

    def request(self, api: Api, body: bytes) -> bytes:
        """A streamed Chat Completions call reports its usage only when asked to: asked, unless the
        CLI said either way. Edited as text, not parsed: the body may be megabytes of history, and
        ``"stream": true`` cannot occur unescaped inside a JSON string."""
        if api is not Api.CHAT_COMPLETIONS or b'"stream_options"' in body or not _STREAMED.search(body):
            return body
        start = body.find(b"{")
        return body if start < 0 else body[:start + 1] + b'"stream_options":{"include_usage":true},' + body[start + 1:]

    def meter(self, grant: Grant, api: Api, body: bytes) -> Meter:
        if api is Api.OTHER:
            return NoObserver().meter(grant, api, body)
        return CallMeter(self, grant, api)

    # Recording ----------------------------------------------------------------------------

    def record(self, grant: Grant, call: Call, reading: Reading, waited: float) -> None:
        """One answered call: priced, added to the run's totals, written behind."""
        model = reading.model or _path_model(call) or grant.model or "unknown"
        usage = ModelUsage(model, 1, reading.input_tokens, reading.output_tokens, reading.cached_tokens,
                           reading.reasoning_tokens, None, waited)
        cost = prices.cost(prices.price_of(self.settings.prices, model), usage)
        usage = replace(usage, cost_usd=cost)
        totals = self._used.get(grant.run_id)
        if totals is not None:  # read at its admission
            totals.add(usage)
        at = self.clock.now()
        self._writes.put_nowait((grant.run_id, usage, utc_day(at), at, actions.lines(reading.tools, self._secrets)))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="usage-writer")

    async def _totals(self, run_id: int) -> Totals:
        if run_id not in self._used:
            if len(self._used) >= MAX_RUNS:
                self._used.clear()
            self._used[run_id] = Totals.of(await self.store.usage(run_id))
        return self._used[run_id]

    async def _write(self) -> None:
        while not self._writes.empty():
            run_id, usage, day, at, lines = self._writes.get_nowait()
            try:
                await self.store.add_usage(run_id, usage, day=day, at=at, actions=lines)
            except Exception:
                log.exception("run %s: could not record a model call's usage", run_id)
            finally:
                self._writes.task_done()

    async def close(self) -> None:
        """Write what is still queued."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)


def model_call(call: Call) -> bool:
    """Whether a call asked the model for an answer and got one: a POST answered 2xx (a refused or
    failed call used nothing), and of ollama's own API a chat or a generation, not its probes."""
    if call.method != "POST" or not 200 <= call.status < 300:
        return False
    return call.api is not Api.OLLAMA or call.path.endswith(OLLAMA_CALLS)


def _path_model(call: Call) -> str:
    """Gemini names the model in the path only (``/v1beta/models/<model>:generateContent``)."""
    found = _GEMINI_MODEL.search(call.path) if call.api is Api.GEMINI else None
    return found[1] if found else ""
