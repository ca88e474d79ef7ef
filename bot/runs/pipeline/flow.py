"""The order of a run's stages, from claimed to ended, and where a restart picks it up again.

Every stage re-reads and conditionally moves the run (``expect``), so it applies to exactly the run
it works on, once, and a cancel in between wins. Each function here hands a stage only the parts it
uses.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import replace

from bot.runs import preflight
from bot.runs.agents import resolve
from bot.forge.client import ForgeError
from bot.logs import mask
from bot.report import sentences
from bot.runs.pipeline import agent
from bot.runs.pipeline.harvest import harvest
from bot.runs.pipeline.judge import judge
from bot.runs.pipeline.prepare import prepare
from bot.runs.pipeline.qa import run_qa
from bot.services import Services
from bot.store import ACTIVE, Run
from bot.workspace import Workspace, branch_choices, remove_workspace, safe_read
from bot.workspace import layout

log = logging.getLogger(__name__)

REQUEUE_PAUSE = 5.0  # seconds a run waits, still preparing, before it is queued again after a Forge
MAX_REQUEUE_PAUSE = 60.0  # failure; doubled with each claim of the run, up to the maximum


async def launch(services: Services, run: Run) -> None:
    """A claimed (``preparing``) run through every stage to its end."""
    store = services.store
    problem = await preflight.problem(services.settings, run.agent_spec, os.environ, services.images)
    if problem:  # a configuration problem: no container, and no quick failure for the pool's backoff
        await store.transition(run.id, "failed", reason=problem, expect=("preparing",))
        return
    try:
        chosen = resolve(services.settings, run.agent_spec)
        if not run.is_pull and not run.branch:
            run = await store.assign_branch(run.id, branch_choices(run.task, run.number))
        prepared = await prepare(services.forge, services.settings, services.workspaces, run, bot=await services.bot_login())
    except ForgeError as e:
        if e.transient:
            pause = min(REQUEUE_PAUSE * 2 ** (run.attempts - 1), MAX_REQUEUE_PAUSE)
            log.warning("run %s: Forge unavailable while preparing, requeued in %.0f s: %s", run.id, pause, e)
            said = _said(services, run, str(e))
            await store.update(run.id, reason=sentences.forge_pause(said, time.time() + pause), expect=("preparing",))
            await asyncio.sleep(pause)  # queued at once, it would be claimed at once, by every free slot
            await store.transition(run.id, "queued", reason=f"requeued: {said}", expect=("preparing",))
        else:
            await store.transition(run.id, "failed", reason=f"could not prepare: {e}", expect=("preparing",))
        return
    except Exception as e:
        log.exception("run %s: preparing failed", run.id)
        reason = _said(services, run, f"could not prepare the workspace: {e}")
        await store.transition(run.id, "failed", reason=reason, expect=("preparing",))
        return
    ws = prepared.ws
    options = {**run.options, "own_branch": True} if prepared.own_branch else run.options
    run = await store.update(run.id, branch=ws.branch, base_branch=ws.base_branch, head_sha=prepared.head_sha,
                             options=options)
    running = await agent.start(services.settings, store, services.executor, services.gateway, run, chosen, ws,
                                prepared.prompt)
    if running is not None:
        await _finish(services, running, ws)


async def resume(services: Services, run: Run) -> None:
    """After a restart: wait again for a running run's agent, or finish a run past its agent."""
    ws = services.workspaces.existing(
        run.owner, run.repo, run.workspace_key, run.branch, run.base_branch, run.start_commit
    )
    await _finish(services, run, ws)


async def _finish(services: Services, run: Run, ws: Workspace) -> None:
    """A run from its agent's container to its end. Whatever goes wrong on the way (a rejected push,
    a symlink the agent planted in .git, a QA container that would not start) fails the run with
    the reason: left active, it would hold its pool slot forever and crash again at every restart."""
    try:
        if run.state == "running":
            run, exit, stopped = await agent.wait(services.settings, services.store, services.executor,
                                                  services.gateway, run, ws)
            judged = await judge(services.settings, services.store, run, ws, exit, stopped)
            if judged is None:
                if stopped:  # see bot.runs.disk: what it wrote must not weigh on the next run
                    await remove_workspace(ws)
                return
            run = judged
        await _after_agent(services, run, ws)
    except Exception as e:  # a cancelled task (shutdown) is no failure: adopt() picks the run up again
        log.exception("run %s: could not finish the run", run.id)
        reason = _said(services, run, f"could not finish the run: {e}")
        await services.store.transition(run.id, "failed", reason=reason, expect=ACTIVE)


def _said(services: Services, run: Run, reason: str) -> str:
    """A failure as the Forge may show it: one line, no secrets, and no host paths (the Forge's
    readers learn nothing of the bot's disk): paths in the run's workspace are relative to it."""
    root = services.workspaces.directory(run.owner, run.repo, run.workspace_key).root
    reason = " ".join(reason.split()).replace(f"{root}/", "").replace(str(root), ".")
    return mask(reason.replace(str(services.workspaces.data_dir), "<data_dir>"), services.settings.secrets())


async def _after_agent(services: Services, run: Run, ws: Workspace) -> None:
    """A review completes with its text; a coding run goes through QA, then the harvest.
    Resumable from ``qa`` or ``harvesting``."""
    store = services.store
    if run.review:
        review = safe_read(ws.meta / layout.STDOUT_LOG, services.settings.limits.log_bytes) or ""
        await store.transition(run.id, "completed", expect=("running", "harvesting"),
                               result=replace(run.result, review=review))
        return
    if run.state == "running":
        run = await store.transition(run.id, "qa", expect=("running",))
        if run is None:
            return
    if run.state == "qa":
        failed = await run_qa(services.settings, store, services.executor, services.gateway, run, ws)
        run = await store.get(run.id) or run  # with the gateway's record of the QA containers
        if failed:
            await store.transition(run.id, "failed", reason=failed[0], expect=("qa",),
                                   result=replace(run.result, qa_log=failed[1]))
            return
        run = await store.transition(run.id, "harvesting", expect=("qa",))
        if run is None:
            return
    await harvest(services.settings, store, services.workspaces, run, ws)
