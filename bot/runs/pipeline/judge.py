"""Stage 3, judge: what the agent's exit means for the run.

A non-zero exit, an OOM kill, a timeout or a kill → failed with the reason; a non-empty BLOCKED.md
→ blocked with its text, secrets masked, as the question; otherwise the run goes on to QA and the
harvest. The judgement applies only to the run whose container ended, and only while it is still running.
"""

from __future__ import annotations

import logging
import time

from bot.runs import final_message
from bot.runs.agents import resolve
from bot import workspace as wsmod
from bot.executor.docker import Exit
from bot.logs import mask, tail
from bot.settings import Settings
from bot.store import Run, RunResult, Store
from bot.workspace import Workspace
from bot.workspace import layout

log = logging.getLogger(__name__)


async def judge(settings: Settings, store: Store, run: Run, ws: Workspace, exit: Exit, stopped: str = "") -> Run | None:
    """Move the run on from its agent's ``exit`` (``stopped``: why the bot stopped it, if it did);
    the run to go on with, or None when it ended here."""
    current = await store.get(run.id)
    if current is None or current.state != "running" or current.container_id != run.container_id:
        return None  # cancelled, or moved on by someone else: theirs wins
    started = run.started_at or time.time()
    reason = failure(exit, settings.limits.timeout, stopped)
    quick = bool(reason) and not exit.timed_out and time.time() - started < settings.backoff.window
    until = await store.record_outcome(
        run.pool, quick_failure=quick, threshold=settings.backoff.failures, pause=settings.backoff.pause
    )
    if until:
        log.warning("pool %s paused until %s after %d quick failures", run.pool, time.ctime(until), settings.backoff.failures)
    log_tail = tail(wsmod.safe_read(ws.meta / layout.CONTAINER_LOG, settings.limits.log_bytes) or "")
    summary = final_message.read(ws, resolve(settings, run.agent_spec), settings.limits.log_bytes)
    outcome = RunResult(log_tail=log_tail, summary=summary, egress=current.result.egress)
    if reason:
        await store.transition(run.id, "failed", reason=reason, expect=("running",), exit_code=exit.code,
                               result=outcome)
        return None
    question = wsmod.read_blocked(ws)
    if question:  # quoted in the status comment and the dashboard, like every other text of the agent's
        await store.transition(run.id, "blocked", reason="the agent asked a question", expect=("running",),
                               exit_code=exit.code, question=mask(question, settings.secrets()))
        return None
    return await store.update(run.id, exit_code=exit.code, result=outcome)


def failure(exit: Exit, timeout: float, stopped: str = "") -> str:
    """Why a container's exit counts as a failure; "" when it does not."""
    if stopped:
        return stopped
    if exit.timed_out:
        return f"the agent ran past its {timeout:g}s limit and was stopped"
    if exit.oom_killed:
        return "the agent ran out of memory and was killed"
    if exit.killed:
        return "the agent was killed"
    if exit.code is None:
        return exit.error or "the agent's container vanished"
    if exit.code != 0:
        return f"the agent exited with code {exit.code}"
    return ""
