"""Makes the Forge show what the store says, after Prow's crier: report from state, remember it.

Two kinds of work, both retried with backoff and both safe to repeat: the outbox's one-off writes
(``outbox``), and each changed run, shown facet by facet (``facets``), only the difference written.

The reporter owns its cadence: its loop wakes when the store commits a change to runs, the outbox,
pools, flags or usage, when a backoff ends or held-back progress may be shown, and every
``schedule.drain`` seconds whatever happened (and that long after an error, such as the store
down); every ``schedule.reconcile`` seconds it also removes stray stopwatches, in a task of its own.
Each run and each issue's outbox is worked on by one task at a time, side by side with the others:
the loop starts the tasks due and goes on (each task's end wakes it), so one hanging call holds up
only its own work, never another run's retry. A pass asked for with ``sync`` waits for its tasks,
and two passes at once share the tasks at the same keys instead of writing twice. A change of
usage (the gateway metered a model call) has every run at work looked at: its status comment
decides whether and when its progress is shown (``facets.StatusComment``); under daily budgets the
queued runs too, since what one run spends can keep them waiting. While the Forge gives no answer
the loop only probes it; once it answers again, everything waiting out a backoff is retried at once.

Across replicas, a task holds the store's leases on its keys while it works (``leases.exclusive``),
so each run and each issue's outbox is worked on by one replica at a time in the cluster: a
replica that finds a key held leaves that work to its holder, which does whatever became due
meanwhile once its task ends (the finder looks again at its next change or drain, not at once).
Stray stopwatches are looked for on one replica per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Hashable
from typing import Any

from bot.forge.client import Forge, ForgeError
from bot.report import facets, stopwatch
from bot.report.labels import Labels
from bot.report.outbox import Outbox
from bot.report.shown import remember, shown
from bot.settings import Settings
from bot.store import AT_WORK, WAITING, OutboxItem, Run, Store
from bot.store.leases import cluster_turn, exclusive
from bot.usage import budgets
from bot import tasks

log = logging.getLogger(__name__)

FIRST_RETRY = 0.5  # seconds; doubled with each further failure, up to MAX_BACKOFF
MAX_BACKOFF = 60.0
PROBE_INTERVAL = 1.0  # seconds between probes while the Forge gives no answer
PROBE_TIMEOUT = 2.0
CONCURRENCY = 8  # runs and issues worked on at once


class Reporter:
    def __init__(
        self, settings: Settings, store: Store, forge: Forge, login: Callable[[], Awaitable[str]], replica: str
    ) -> None:
        self.store, self.forge, self.replica = store, forge, replica
        self._every = settings.schedule
        self._held = WAITING if budgets.daily(settings) is not None else ()  # runs a daily budget may hold
        labels = Labels(forge, store, replica)
        comment = facets.StatusComment(settings, forge, store, login)
        self.facets: tuple[facets.Facet, ...] = (
            facets.Review(forge, store, login), facets.PullRequest(forge, store), facets.Stopwatch(forge, store, login),
            comment, facets.StateLabel(settings, forge, store, labels), facets.CommitStatus(forge, store),
        )
        self.outbox = Outbox(store, forge, labels, comment)
        self.comment = comment
        self._changes = store.subscribe("runs", "outbox", "pools", "flags", "usage")
        self._usage_changed = True  # look at the runs at work: at start, what changed before is unknown
        self._task: asyncio.Task[None] | None = None
        self._work: dict[Hashable, asyncio.Task[bool | None]] = {}  # run and issue keys -> the task at them
        self._retry_at: dict[int, float] = {}  # runs waiting out a backoff
        self._failures: dict[Hashable, int] = {}  # per run and item, counted since the Forge last came back
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._failed = False  # a write failed transiently since the Forge was last asked
        self._down = False  # the Forge gave no answer: probe it until it does
        self._retry_all = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reporter")

    async def stop(self) -> None:
        await tasks.cancel([self._task, *self._work.values()])

    async def _loop(self) -> None:
        reconcile_at = time.monotonic() + self._every.reconcile
        while True:
            wait = self._every.drain  # after an error
            try:
                if time.monotonic() >= reconcile_at:
                    reconcile_at = time.monotonic() + self._every.reconcile
                    self._begin([("stopwatches",)], self._stray_stopwatches())
                await self._start_due()  # not awaited: each task's end wakes the loop
                wait = await self._next_due()
            except Exception:
                log.exception("reporting failed")
            if "usage" in await self._changes.wait(max(min(wait, reconcile_at - time.monotonic()), 0.05)):
                self._usage_changed = True

    async def _next_due(self) -> float:
        """Seconds until work not yet started falls due: a backoff ends, or the resync period."""
        if self._down:
            return PROBE_INTERVAL
        now = time.time()
        held = [*self._retry_at.values(), *self.comment.due.values()]
        times = [t for t in held if t > now]  # those due are under way or wait for a key
        if (outbox := await self.store.next_outbox_at(after=now)) is not None:
            times.append(outbox)
        return min([t - now for t in times], default=self._every.drain)

    async def sync(self) -> None:
        """One pass, awaited: every due outbox item and every run whose state changed since last
        reported, including work the loop already started."""
        await asyncio.gather(*await self._start_due())
        await self._forge_answers()  # after a transient failure

    async def _forge_answers(self) -> bool:
        """Whether to write now: after a transient failure, or while the Forge is down, ask it."""
        if not (self._failed or self._down):
            return True
        was_down, self._failed = self._down, False
        self._down = not await self.forge.answers(PROBE_TIMEOUT)
        if self._down and not was_down:
            log.warning("the Forge does not answer; probing it every %.0f s", PROBE_INTERVAL)
        elif was_down and not self._down:
            log.info("the Forge answers again: retrying every report now")
            self._failures.clear()  # an outage is no reason to wait longer afterwards
            self._retry_at.clear()
            self._retry_all = True
        return not self._down

    async def _start_due(self) -> list[asyncio.Task[bool | None]]:
        """Start a task for each issue with due outbox items and each run to report, unless one
        is at it already (that one is returned); work whose keys are held waits for them."""
        if not await self._forge_answers():
            return []
        now = float("inf") if self._retry_all else time.time()
        self._retry_all = False
        issues: dict[tuple[str, str, int], list[OutboxItem]] = {}
        for item in await self.store.due_outbox(now=now):
            issues.setdefault((item.owner, item.repo, item.number), []).append(item)
        runs = await self.store.runs_to_report()
        started = []
        for (owner, repo, number), items in issues.items():
            refreshed = [("run", item.run_id) for item in items if item.run_id is not None]  # ``/status``
            started.append(self._begin([("issue", owner, repo, number), *refreshed], self._deliver_all(items)))
        changed = {run.id for run in runs}
        for run_id in [*changed, *(i for i in await self._progress_due() if i not in changed)]:
            if self._retry_at.get(run_id, 0.0) <= now:
                started.append(self._begin([("run", run_id)], self._report_run(run_id, progress=run_id not in changed)))
        return [t for t in started if t is not None]

    async def _progress_due(self) -> list[int]:
        """Runs at work whose progress may be shown now: after a change of usage, all of them (each
        status comment decides and keeps in ``due`` what it holds back) and, under daily budgets, the
        queued ones (edited only if their text changed); else those held back till now."""
        now = time.time()
        if self._usage_changed:
            self._usage_changed = False
            for run in await self.store.runs(states=(*AT_WORK, *self._held)):
                if not run.on_ref:
                    self.comment.due.setdefault(run.id, now)
        return [run_id for run_id, at in self.comment.due.items() if at <= now]

    def _begin(self, keys: list[Hashable], work: Coroutine[Any, Any, bool]) -> asyncio.Task[bool | None] | None:
        if (task := self._work.get(keys[0])) is not None or any(k in self._work for k in keys):
            work.close()  # never started
            return task
        task = asyncio.create_task(self._leased(keys, work), name=f"report-{keys[0]}")
        self._work.update(dict.fromkeys(keys, task))

        def done(t: asyncio.Task[bool | None]) -> None:
            for key in keys:
                if self._work.get(key) is t:
                    del self._work[key]
            if t.cancelled():
                return
            if t.exception():  # a bug or a store gone: left to the next drain, never retried at once
                log.error("reporting failed", exc_info=t.exception())
                return
            if t.result() is None:  # another replica is at it: left to it, or to the next drain
                return
            if t.result():
                self._failed = True
            # What changed while it worked, and what waited for its keys, is due now. (Usage is
            # not among them: a change of it is heard from the store, and a report changes none.)
            self._changes.notify(set(self._changes.topics) - {"usage"})

        task.add_done_callback(done)
        return task

    async def _leased(self, keys: list[Hashable], work: Coroutine[Any, Any, bool]) -> bool | None:
        """``work`` while this replica holds the keys' leases; None if another replica is at them."""
        names = ["report:" + ":".join(map(str, key)) for key in keys]
        try:
            async with exclusive(self.store, names, self.replica) as held:
                return await work if held else None
        finally:
            work.close()  # a no-op once it ran; else it never starts

    def _backoff(self, key: Hashable) -> float:
        """Seconds to wait before trying ``key`` again, growing with its failures since the Forge
        last came back (failures during an outage say nothing about the item)."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        return min(FIRST_RETRY * 2 ** (failures - 1), MAX_BACKOFF)

    async def reconcile(self) -> None:
        """No stopwatch of the bot may run on an issue without an active run."""
        active = {(r.owner, r.repo, r.number) for r in await self.store.runs(states=AT_WORK)}
        await stopwatch.reconcile(self.forge, active)

    async def _stray_stopwatches(self) -> bool:
        """``reconcile`` on one replica per interval, as a task of its own: a Forge that hangs on
        it holds up no report."""
        if await cluster_turn(self.store, "stopwatches", self.replica, self._every.reconcile):
            await self.reconcile()
        return False

    # Runs ---------------------------------------------------------------------------------

    async def _report_run(self, run_id: int, *, progress: bool = False) -> bool:
        """Report one run as it is now (with ``progress``, even if its state is as reported: its
        usage changed); True on a transient failure (retried after a backoff)."""
        key = ("run", run_id)
        async with self._slots:
            self.comment.due.pop(run_id, None)  # decided anew by this report
            run = await self.store.get(run_id)
            if run is None:
                return False
            if not progress and (await self.store.reported(run_id)).get("version") == run.version:
                return False
            try:
                await self.report(run)
            except ForgeError as e:
                if e.transient:
                    self._retry_at[run.id] = time.time() + self._backoff(key)
                    if progress:
                        self.comment.due[run.id] = self._retry_at[run.id]
                    log.warning("run %s: report failed, retrying: %s", run.id, e)
                    return True
                log.error("run %s: the Forge refused a report: %s", run.id, e)
                await self.store.set_reported(run.id, "version", run.version)
            self._retry_at.pop(run.id, None)
            self._failures.pop(key, None)
            return False

    async def report(self, run: Run) -> None:
        """Make the Forge show this run's state; each facet is written only when it changed.

        Each facet records what it did before the next one starts, so after a failure the retry
        resumes where it stopped and nothing is created twice.
        """
        was = await shown(self.store, run.id)
        for facet in self.facets:
            if facet.should_report(run, was):
                await facet.report(run, was)
        await remember(self.store, run.id, was, version=run.version)

    # Outbox -------------------------------------------------------------------------------

    async def _deliver_all(self, items: list[OutboxItem]) -> bool:
        """One issue's due items in order; True on a transient failure, which leaves the rest for later."""
        async with self._slots:
            for item in items:
                fresh = await self.store.outbox_item(item.id)  # as it is now, not as listed
                if fresh is None:
                    continue  # delivered since it was listed
                if fresh.attempts != item.attempts:
                    return False  # failed and rescheduled since it was listed: keep the order
                if await self._deliver(fresh):
                    return True
        return False

    async def _deliver(self, item: OutboxItem) -> bool:
        """Write one item and mark it done; True on a transient failure (retried after a backoff)."""
        key = ("item", item.id)
        try:
            await self.outbox.write(item)
        except ForgeError as e:
            if e.transient:
                await self.store.outbox_done(item.id, str(e), retry_at=time.time() + self._backoff(key))
                return True
            log.error("outbox %s: the Forge refused: %s", item.key, e)
            await self.store.outbox_done(item.id, str(e))
        else:
            await self.store.outbox_done(item.id)
        self._failures.pop(key, None)
        return False
