"""Makes the Forge show what the store says, after Prow's crier: report from state, remember it.

Two kinds of work, both retried with backoff and both safe to repeat:
- the outbox: one-off writes queued by handlers (replies, reactions), each once per key; a reply
  that may have been posted before a failure is looked for by its marker before posting again;
- runs: each run's sticky status comment (found by its hidden marker and edited in place) and the
  trigger label, compared with what was last reported and only the difference written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import messages, results, timetracking
from .forge import ForgeError
from .services import Services
from .store import OutboxItem, Run

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
LABEL_COLOR = "#5319e7"
AGENT_ON = ("running", "qa", "harvesting")  # the states in which the issue's stopwatch runs


def backoff(attempts: int) -> float:
    return min(2.0 ** attempts, MAX_BACKOFF)


class Reporter:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.store = services.store
        self.forge = services.forge
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._retry_at: dict[int, tuple[float, int]] = {}
        self._label_ids: dict[str, dict[str, int]] = {}  # per repo; refreshed when a name is missing
        self._pass = asyncio.Lock()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="reporter")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def wake(self) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.sync()
            except Exception:
                log.exception("reporting failed")
            timeout = await self._next_due()
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel here
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _next_due(self) -> float:
        now = time.time()
        times = [t for t, _ in self._retry_at.values()]
        outbox = await self.store.next_outbox_at()
        if outbox is not None:
            times.append(outbox)
        return max(0.05, min([t - now for t in times], default=30.0))

    async def sync(self) -> None:
        """One pass: due outbox items, then every run whose state changed since last reported.

        One pass at a time: the loop and the scheduler's report job both call this, and two
        overlapping passes would each post the same due comment.
        """
        async with self._pass:
            await self._sync()

    async def _sync(self) -> None:
        for item in await self.store.due_outbox():
            await self._deliver(item)
        now = time.time()
        for run in await self.store.runs_to_report():
            at, attempts = self._retry_at.get(run.id, (0.0, 0))
            if at > now:
                continue
            try:
                await self.report(run)
            except ForgeError as e:
                if not e.transient:
                    log.error("run %s: the Forge refused a report: %s", run.id, e)
                    await self.store.set_reported(run.id, "version", run.version)
                    continue
                self._retry_at[run.id] = (now + backoff(attempts), attempts + 1)
                log.warning("run %s: report failed, retrying: %s", run.id, e)
            else:
                self._retry_at.pop(run.id, None)

    async def reconcile(self) -> None:
        """No stopwatch of the bot may run on an issue without an active run."""
        active = {(r.owner, r.repo, r.number) for r in await self.store.runs(states=AGENT_ON)}
        await timetracking.reconcile(self.forge, active)

    # Outbox -------------------------------------------------------------------------------

    async def _deliver(self, item: OutboxItem) -> None:
        try:
            await WRITERS[item.kind](self, item)
        except ForgeError as e:
            if e.transient:
                await self.store.outbox_done(item.id, str(e), retry_at=time.time() + backoff(item.attempts))
                return
            log.error("outbox %s: the Forge refused: %s", item.key, e)
            await self.store.outbox_done(item.id, str(e))
            return
        await self.store.outbox_done(item.id)

    async def _comment(self, item: OutboxItem) -> None:
        body = item.payload["body"]
        path = f"/repos/{item.owner}/{item.repo}/issues/{item.number}/comments"
        if item.attempts and await self._find_comment(path, body.rsplit("\n", 1)[-1]):
            return  # an earlier attempt did post it
        await self.forge.post(path, {"body": body})

    async def _reaction(self, item: OutboxItem) -> None:
        await self.forge.post(
            f"/repos/{item.owner}/{item.repo}/issues/comments/{item.payload['comment_id']}/reactions",
            {"content": item.payload["content"]},
        )

    async def _find_comment(self, path: str, marker: str) -> dict[str, Any] | None:
        for comment in await self.forge.getitem(path) or []:
            if marker in comment.get("body", ""):
                return comment
        return None

    # Runs ---------------------------------------------------------------------------------

    async def report(self, run: Run) -> None:
        """Make the Forge show this run's state; each facet is written only when it changed.

        Each step records what it did before the next one starts, so after a failure the retry
        resumes where it stopped and nothing is created twice.
        """
        reported = await self.store.reported(run.id)
        settings = self.services.settings
        run_url = reported.get("comment_url", "")
        if run.state == "completed" and run.review and "review" not in reported:
            review = await results.post_review(self.forge, run)
            reported["review"] = review["id"]
            await self.store.set_reported(run.id, "review", review["id"])
        if run.state == "completed" and not run.review and not run.is_pull and run.result.get("pushed") \
                and "pull" not in reported:
            pull = await results.open_pull(self.forge, run, run_url)
            reported["pull"] = {"number": pull["number"], "url": pull.get("html_url") or pull.get("url", "")}
            await self.store.set_reported(run.id, "pull", reported["pull"])
        if "ref" not in run.options:  # a run on a branch without an issue (admin API) has none to show on
            await self._stopwatch(run, reported)
            body = messages.status_comment(
                run, queue=await self._queue_line(run), links=self._links(run, reported),
                note=messages.TIME_TRACKING_OFF if reported.get("stopwatch") == timetracking.DISABLED else "",
            )
            await self._status_comment(run, reported, body)
            await self._state_label(run, reported)
        if sha := run.head_sha if run.is_pull else run.options.get("ref_sha", ""):
            await self._commit_status(run, reported, sha)
        if run.trigger == "label" and not reported.get("trigger_label_removed"):  # accepted: queued or later
            await self._remove_label(run, settings.label_prefix + run.agent_spec)
            await self.store.set_reported(run.id, "trigger_label_removed", True)
        await self.store.set_reported(run.id, "version", run.version)

    async def _stopwatch(self, run: Run, reported: dict[str, Any]) -> None:
        """Started while the agent works, stopped once for each spell of work (keyed by its
        ``started_at``). A spell is stopped even if no start was seen to succeed: a start whose
        answer was lost may have run, and a run first seen ended had none; stop answers 409 then,
        and what the stopwatch missed is booked either way."""
        state = reported.get("stopwatch")
        if state == timetracking.DISABLED:
            return
        spell = run.started_at
        if run.state in AGENT_ON and state != ["started", spell]:
            new = await timetracking.start(self.forge, run)
        elif run.state not in AGENT_ON and run.state != "queued" and spell and state != ["stopped", spell]:
            new = await timetracking.stop(self.forge, run, await self.services.bot_login())
        else:
            return
        if new != timetracking.DISABLED:
            new = [new, spell]
        reported["stopwatch"] = new
        await self.store.set_reported(run.id, "stopwatch", new)

    async def _commit_status(self, run: Run, reported: dict[str, Any], sha: str) -> None:
        want = [sha, run.state]
        if reported.get("status") == want:
            return
        await results.set_status(self.forge, run, sha, reported.get("comment_url", ""))
        await self.store.set_reported(run.id, "status", want)

    async def _state_label(self, run: Run, reported: dict[str, Any]) -> None:
        """Exactly one of the configured state labels on the issue: the one of the run's state."""
        names = self.services.settings.labels.model_dump()
        want = names.get(run.state) or names["running"]
        if reported.get("state_label") == want:
            return
        base = f"/repos/{run.owner}/{run.repo}"
        path = f"{base}/issues/{run.number}/labels"
        # Adding answers with the issue's full label set: the stale state labels are in it.
        current = await self.forge.post(path, {"labels": [await self._label_id(base, want)]})
        if not any(label["name"] == want for label in current or []):  # Gitea drops an id deleted since
            self._label_ids.pop(base, None)
            current = await self.forge.post(path, {"labels": [await self._label_id(base, want)]})
        stale = set(names.values()) - {want}
        for label in current or []:
            if label["name"] in stale:
                await self._delete_label(run, label["id"])
        await self.store.set_reported(run.id, "state_label", want)

    async def _label_id(self, base: str, name: str) -> int:
        """The repository's id for a label, created when missing; the listing is kept per repository."""
        ids = self._label_ids.get(base)
        if ids is None or name not in ids:
            listing = self.forge.getiter(f"{base}/labels")
            ids = self._label_ids[base] = {label["name"]: label["id"] async for label in listing}
        if name not in ids:
            created = await self.forge.post(f"{base}/labels", {"name": name, "color": LABEL_COLOR})
            ids[name] = created["id"]
        return ids[name]

    async def _status_comment(self, run: Run, reported: dict[str, Any], body: str) -> None:
        if reported.get("comment_body") == body:
            return
        issue_path = f"/repos/{run.owner}/{run.repo}/issues"
        comment_id = reported.get("comment_id")
        if comment_id is None:
            found = await self._find_comment(f"{issue_path}/{run.number}/comments", messages.marker("run", str(run.id)))
            if found is None:
                found = await self.forge.post(f"{issue_path}/{run.number}/comments", {"body": body})
            comment_id = found["id"]
            await self.store.set_reported(run.id, "comment_id", comment_id)
            await self.store.set_reported(run.id, "comment_url", found.get("html_url", ""))
            if found.get("body") == body:
                await self.store.set_reported(run.id, "comment_body", body)
                return
        await self.forge.patch(f"{issue_path}/comments/{comment_id}", {"body": body})
        await self.store.set_reported(run.id, "comment_body", body)

    async def _remove_label(self, run: Run, name: str) -> None:
        path = f"/repos/{run.owner}/{run.repo}/issues/{run.number}/labels"
        for label in await self.forge.getitem(path) or []:
            if label["name"] == name:
                await self._delete_label(run, label["id"])

    async def _delete_label(self, run: Run, label_id: int) -> None:
        try:
            await self.forge.delete(f"/repos/{run.owner}/{run.repo}/issues/{run.number}/labels/{label_id}")
        except ForgeError as e:
            if e.status not in (404, 422):  # gone already: an earlier attempt removed it
                raise

    async def _queue_line(self, run: Run) -> str:
        if run.state != "queued":
            return ""
        settings = self.services.settings
        frozen = await self.store.flag("frozen")
        if frozen == "1" or (frozen is None and settings.frozen):
            return "The bot is frozen; the run will start when it is unfrozen."
        pool = await self.store.pool(run.pool)
        if pool.paused_until > time.time():
            return f"Pool `{run.pool}` is backing off after repeated quick failures until {messages.format_time(pool.paused_until)}."
        position = await self.store.queue_position(run.id)
        limit = settings.pool_of(run.pool).limit if run.pool in settings.pools else settings.max_running
        return f"Position {position} in the queue; pool `{run.pool}` runs {limit} at a time."

    def _links(self, run: Run, reported: dict[str, Any]) -> str:
        if run.review:
            return "The review is posted on the pull request." if "review" in reported else ""
        commits = run.result.get("commits") or []
        if not commits:
            return ""
        listed = "\n".join(f"- {c}" for c in commits[:20])
        pushed = f"Pushed {len(commits)} commit(s) to `{run.result.get('branch', run.branch)}`:\n{listed}"
        if "pull" in reported:
            return f"Pull request: #{reported['pull']['number']} {reported['pull']['url']}\n\n{pushed}"
        return pushed


WRITERS = {"comment": Reporter._comment, "reaction": Reporter._reaction}
