"""Makes the Forge show what the store says, after Prow's crier: report from state, remember it.

Two kinds of work, both retried with backoff and both safe to repeat:
- the outbox: one-off writes queued by handlers (replies, reactions, removing a trigger label,
  `/status` refreshes), each once per key; a reply that may have been posted before a failure is
  looked for by its marker before posting again;
- runs: each run's sticky status comment (found by its hidden marker and edited in place, posted
  again if deleted) and its state label, compared with what was last reported and only the
  difference written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable, Iterator
from typing import Any

from bot.report import sentences
from bot.admin import pools
from bot.report import publish
from bot.report import stopwatch
from bot.forge.client import ForgeError
from bot.forge.paths import Repo
from bot.report.links import links
from bot.services import Services
from bot.store import OutboxItem, Run

log = logging.getLogger(__name__)

FIRST_RETRY = 0.5  # seconds; doubled with each further failure, up to MAX_BACKOFF
MAX_BACKOFF = 60.0
PROBE_INTERVAL = 1.0  # seconds between probes while the Forge gives no answer
PROBE_TIMEOUT = 2.0
CONCURRENCY = 8  # runs and issues worked on at once
BUSY_RECHECK = 0.5  # seconds before looking again at work another pass was still at
LABEL_COLOR = "#5319e7"
AGENT_ON = ("running", "qa", "harvesting")  # the states in which the issue's stopwatch runs


class Reporter:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = services.store
        self.forge = services.forge
        self._changes = services.store.subscribe("runs", "outbox", "pools", "flags")
        self._task: asyncio.Task[None] | None = None
        self._retry_at: dict[int, float] = {}  # runs waiting out a backoff
        self._failures: dict[Hashable, int] = {}  # per run and item, counted since the Forge last came back
        self._label_ids: dict[Repo, dict[str, int]] = {}  # refreshed when a name is missing
        self._label_locks: dict[Repo, asyncio.Lock] = {}  # per repo: one pass lists or creates its labels
        self._busy: set[Hashable] = set()  # the runs and issues a pass is working on
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._down = False  # the Forge gave no answer: probe it until it does
        self._skipped = False  # the last pass left work to another pass still at it

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reporter")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("reporting failed")
            await self._changes.wait(await self._next_due())

    async def _next_due(self) -> float:
        if self._down:
            return PROBE_INTERVAL
        now = time.time()
        times = list(self._retry_at.values())
        outbox = await self.store.next_outbox_at()
        if outbox is not None:
            times.append(outbox)
        # Work another pass is still at looks due: look again soon, but do not spin meanwhile.
        return max(BUSY_RECHECK if self._skipped else 0.05, min([t - now for t in times], default=30.0))

    async def sync(self) -> None:
        """One pass: due outbox items and every run whose state changed since last reported.

        Runs and issues are worked on side by side, so one hanging call holds up only its own.
        Passes may overlap (the loop and the scheduler's report job both call this): each run and
        each issue's outbox is claimed by one pass at a time and read again under the claim, so
        nothing is written twice. While the Forge gives no answer, a pass only probes it; once it
        answers again, everything waiting out a backoff is retried at once.
        """
        retry_all, self._skipped = False, False
        if self._down:
            if not await self.forge.answers(PROBE_TIMEOUT):
                return
            log.info("the Forge answers again: retrying every report now")
            self._down, retry_all = False, True
            self._failures.clear()  # an outage is no reason to wait longer afterwards
        now = float("inf") if retry_all else time.time()
        issues: dict[tuple[str, str, int], list[OutboxItem]] = {}
        for item in await self.store.due_outbox(now=now):
            issues.setdefault((item.owner, item.repo, item.number), []).append(item)
        runs = await self.store.runs_to_report()  # first: a failed read must leave no coroutine unawaited
        work = [self._deliver_all(items) for items in issues.values()]
        work += [self._report_run(run.id, now) for run in runs]
        failed = await asyncio.gather(*work)
        if any(failed) and not await self.forge.answers(PROBE_TIMEOUT):
            log.warning("the Forge does not answer; probing it every %.0f s", PROBE_INTERVAL)
            self._down = True

    @contextlib.contextmanager
    def _claim(self, *keys: Hashable) -> Iterator[bool]:
        """Whether this pass may work on ``keys`` (runs, issues): no other pass is working on them."""
        if self._busy.intersection(keys):
            self._skipped = True
            yield False
            return
        self._busy.update(keys)
        try:
            yield True
        finally:
            self._busy.difference_update(keys)

    async def _report_run(self, run_id: int, now: float) -> bool:
        """Report one run unless another pass is at it or it waits out a backoff; True on a
        transient failure."""
        key = ("run", run_id)
        with self._claim(key) as mine:
            if not mine or self._retry_at.get(run_id, 0.0) > now:
                return False
            async with self._slots:
                run = await self.store.get(run_id)  # as it is now: another pass may have reported it
                if run is None or (await self.store.reported(run_id)).get("version") == run.version:
                    return False
                try:
                    await self.report(run)
                except ForgeError as e:
                    if e.transient:
                        self._retry_at[run.id] = time.time() + self._backoff(key)
                        log.warning("run %s: report failed, retrying: %s", run.id, e)
                        return True
                    log.error("run %s: the Forge refused a report: %s", run.id, e)
                    await self.store.set_reported(run.id, "version", run.version)
                self._retry_at.pop(run.id, None)
                self._failures.pop(key, None)
                return False

    def _backoff(self, key: Hashable) -> float:
        """Seconds to wait before trying ``key`` again, growing with its failures since the Forge
        last came back (failures during an outage say nothing about the item)."""
        failures = self._failures[key] = self._failures.get(key, 0) + 1
        return min(FIRST_RETRY * 2 ** (failures - 1), MAX_BACKOFF)

    async def reconcile(self) -> None:
        """No stopwatch of the bot may run on an issue without an active run."""
        active = {(r.owner, r.repo, r.number) for r in await self.store.runs(states=AGENT_ON)}
        await stopwatch.reconcile(self.forge, active)

    # Outbox -------------------------------------------------------------------------------

    async def _deliver_all(self, items: list[OutboxItem]) -> bool:
        """One issue's due items in order, unless another pass is at that issue or at a run whose
        comment an item refreshes (``/status``); True on a transient failure, which leaves the
        rest for later."""
        first = items[0]
        runs = {("run", item.run_id) for item in items if item.run_id is not None}
        with self._claim(("issue", first.owner, first.repo, first.number), *runs) as mine:
            if not mine:
                return False
            async with self._slots:
                for item in items:
                    fresh = await self.store.outbox_item(item.id)  # as it is now, not as listed
                    if fresh is None:
                        continue  # another pass delivered it since
                    if fresh.attempts != item.attempts:
                        return False  # another pass failed on it since and rescheduled it: keep the order
                    if await self._deliver(fresh):
                        return True
        return False

    async def _deliver(self, item: OutboxItem) -> bool:
        """Write one item and mark it done; True on a transient failure (retried after a backoff)."""
        key = ("item", item.id)
        try:
            await WRITERS[item.kind](self, item)
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

    async def _comment(self, item: OutboxItem) -> None:
        body = item.payload["body"]
        path = Repo(item.owner, item.repo).comments(item.number)
        if item.attempts and await self._find_comment(path, body.rsplit("\n", 1)[-1]):
            return  # an earlier attempt did post it
        await self.forge.post(path, {"body": body})

    async def _reaction(self, item: OutboxItem) -> None:
        await self.forge.post(
            Repo(item.owner, item.repo).reactions(item.payload["comment_id"]),
            {"content": item.payload["content"]},
        )

    async def _unlabel(self, item: OutboxItem) -> None:
        await self._delete_label(Repo(item.owner, item.repo), item.number, item.payload["label_id"])

    async def _status(self, item: OutboxItem) -> None:
        """A user's ``/status``: the run's comment shown afresh, saying whom it answers, or posted
        again when a maintainer deleted it; always a visible change, even for a finished run."""
        run = await self.store.get(item.run_id)
        if run is None:
            return
        reported = await self.store.reported(run.id)
        asked = sentences.status_asked(item.payload["login"], time.time())
        reported.pop("comment_body", None)  # asked for: written even when nothing else changed
        await self._status_comment(run, reported, await self._body(run, reported, asked))

    async def _find_comment(self, path: str, marker: str) -> dict[str, Any] | None:
        """The bot's own comment carrying ``marker``: anyone can write a marker, only the bot's
        account counts (run ids are sequential, so an outsider could post the next one first)."""
        bot = await self.services.bot_login()
        for comment in await self.forge.getitem(path) or []:
            if marker in comment.get("body", "") and (comment.get("user") or {}).get("login") == bot:
                return comment
        return None

    # Runs ---------------------------------------------------------------------------------

    async def report(self, run: Run) -> None:
        """Make the Forge show this run's state; each facet is written only when it changed.

        Each step records what it did before the next one starts, so after a failure the retry
        resumes where it stopped and nothing is created twice.
        """
        reported = await self.store.reported(run.id)
        run_url = reported.get("comment_url", "")
        if run.state == "completed" and run.review and "review" not in reported:
            review = await publish.post_review(self.forge, run, await self.services.bot_login())
            reported["review"] = review["id"]
            await self.store.set_reported(run.id, "review", review["id"])
        proposes = not run.is_pull or run.options.get("own_branch")  # its branch is no pull request's head
        if run.state == "completed" and not run.review and proposes and run.result.get("pushed") \
                and "pull" not in reported:
            pull = await publish.open_pull(self.forge, run, run_url)
            reported["pull"] = {"number": pull["number"], "url": pull.get("html_url") or pull.get("url", "")}
            await self.store.set_reported(run.id, "pull", reported["pull"])
        if "ref" not in run.options:  # a run on a branch without an issue (admin API) has none to show on
            await self._stopwatch(run, reported)
            await self._status_comment(run, reported, await self._body(run, reported))
            await self._state_label(run, reported)
        if sha := run.head_sha if run.is_pull else run.options.get("ref_sha", ""):
            await self._commit_status(run, reported, sha)
        await self.store.set_reported(run.id, "version", run.version)

    async def _stopwatch(self, run: Run, reported: dict[str, Any]) -> None:
        """Started while the agent works, stopped once for each spell of work (keyed by its
        ``started_at``). A spell is stopped even if no start was seen to succeed: a start whose
        answer was lost may have run, and a run first seen ended had none; stop answers 409 then,
        and what the stopwatch missed is booked either way."""
        state = reported.get("stopwatch")
        if state == stopwatch.DISABLED:
            return
        spell = run.started_at
        if run.state in AGENT_ON and state != ["started", spell]:
            new = await stopwatch.start(self.forge, run)
        elif run.state not in AGENT_ON and run.state != "queued" and spell and state != ["stopped", spell]:
            new = await stopwatch.stop(self.forge, run, await self.services.bot_login())
        else:
            return
        if new != stopwatch.DISABLED:
            new = [new, spell]
        reported["stopwatch"] = new
        await self.store.set_reported(run.id, "stopwatch", new)

    async def _commit_status(self, run: Run, reported: dict[str, Any], sha: str) -> None:
        want = [sha, run.state]
        if reported.get("status") == want:
            return
        await publish.set_status(self.forge, run, sha, reported.get("comment_url", ""))
        await self.store.set_reported(run.id, "status", want)

    async def _state_label(self, run: Run, reported: dict[str, Any]) -> None:
        """Exactly one of the configured state labels on the issue: the one of the run's state."""
        names = self.services.settings.labels.model_dump()
        want = names.get(run.state) or names["running"]
        if reported.get("state_label") == want:
            return
        repo = Repo(run.owner, run.repo)
        path = repo.issue_labels(run.number)
        # Adding answers with the issue's full label set: the stale state labels are in it.
        current = await self.forge.post(path, {"labels": [await self._label_id(repo, want)]})
        if not any(label["name"] == want for label in current or []):  # Gitea drops an id deleted since
            self._label_ids.pop(repo, None)
            current = await self.forge.post(path, {"labels": [await self._label_id(repo, want)]})
        stale = set(names.values()) - {want}
        for label in current or []:
            if label["name"] in stale:
                await self._delete_label(repo, run.number, label["id"])
        await self.store.set_reported(run.id, "state_label", want)

    async def _label_id(self, repo: Repo, name: str) -> int:
        """The repository's id for a label, created when missing; the listing is kept per repository.
        One run of a repository at a time, so two runs never create the same label."""
        async with self._label_locks.setdefault(repo, asyncio.Lock()):
            ids = self._label_ids.get(repo)
            if ids is None or name not in ids:
                listing = self.forge.getiter(repo.labels())
                ids = self._label_ids[repo] = {label["name"]: label["id"] async for label in listing}
            if name not in ids:
                created = await self.forge.post(repo.labels(), {"name": name, "color": LABEL_COLOR})
                ids[name] = created["id"]
            return ids[name]

    async def _body(self, run: Run, reported: dict[str, Any], asked: str = "") -> str:
        return sentences.status_comment(
            run, queue=await self._queue_line(run), links=self._links(run, reported),
            note=sentences.TIME_TRACKING_OFF if reported.get("stopwatch") == stopwatch.DISABLED else "",
            asked=asked,
        )

    async def _status_comment(self, run: Run, reported: dict[str, Any], body: str) -> None:
        """Edit the run's one status comment in place; post it (again) when there is none (any more)."""
        if reported.get("comment_body") == body:
            return
        repo = Repo(run.owner, run.repo)
        comment_id = reported.get("comment_id")
        if comment_id is not None:
            try:
                await self.forge.patch(repo.comment(comment_id), {"body": body})
            except ForgeError as e:
                if e.status != 404:
                    raise
                log.info("run %s: its status comment was deleted; posting it again", run.id)
            else:
                await self.store.set_reported(run.id, "comment_body", body)
                return
        # Posted by an earlier attempt whose answer was lost? (A deleted one is no longer listed.)
        found = await self._find_comment(repo.comments(run.number), sentences.marker("run", str(run.id)))
        if found is None:
            found = await self.forge.post(repo.comments(run.number), {"body": body})
        await self.store.set_reported(run.id, "comment_id", found["id"])
        await self.store.set_reported(run.id, "comment_url", found.get("html_url", ""))
        if found.get("body") != body:
            await self.forge.patch(repo.comment(found["id"]), {"body": body})
        await self.store.set_reported(run.id, "comment_body", body)

    async def _delete_label(self, repo: Repo, number: int, label_id: int) -> None:
        try:
            await self.forge.delete(repo.issue_label(number, label_id))
        except ForgeError as e:
            if e.status not in (404, 422):  # gone already: an earlier attempt (or someone) removed it
                raise

    async def _queue_line(self, run: Run) -> str:
        if run.state != "queued":
            return ""
        settings = self.services.settings
        if await pools.bot_frozen(settings, self.store):
            return "The bot is frozen; the run will start when it is unfrozen."
        pool = await self.store.pool(run.pool)
        if pool.paused_until > time.time():
            return f"Pool `{run.pool}` is backing off after repeated quick failures until {sentences.format_time(pool.paused_until)}."
        position = await self.store.queue_position(run.id)
        return f"Position {position} in the queue; pool `{run.pool}` runs {pools.limit(settings, run.pool)} at a time."

    def _links(self, run: Run, reported: dict[str, Any]) -> str:
        found = links(run, reported, self.services.settings.forge_url)
        if run.review:
            return f"The review is posted on the pull request: {found['review']}" if "review" in found else ""
        commits = run.result.get("commits") or []
        if not commits:
            return ""
        listed = sentences.fenced("\n".join(commits[:20]))  # their subjects are the agent's text
        pushed = f"Pushed {len(commits)} commit(s) to `{run.result.get('branch', run.branch)}`:\n{listed}"
        if "pull" in reported:
            return f"Pull request: #{reported['pull']['number']} {found['pull_request']}\n\n{pushed}"
        return pushed


WRITERS = {
    "comment": Reporter._comment,
    "reaction": Reporter._reaction,
    "unlabel": Reporter._unlabel,
    "status": Reporter._status,
}
