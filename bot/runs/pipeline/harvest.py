"""Stage 5, harvest: take in the agent's commits, commit what it left, check the branch, push
host-side, record the result."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from bot import workspace as wsmod
from bot.settings import Settings
from bot.store import Run, Store
from bot.workspace import Workspace, Workspaces

async def harvest(settings: Settings, store: Store, workspaces: Workspaces, run: Run, ws: Workspace) -> None:
    """Complete a ``harvesting`` run with its commits pushed, or fail it when they break the branch
    rules or a harvest limit, or when an earlier harvest of it never ended."""
    if run.result.harvest_under_way:
        await store.transition(run.id, "failed", expect=("harvesting",),
                               reason="the bot stopped during this run's harvest; it is not tried again")
        return
    await store.update(run.id, result=replace(run.result, harvest_under_way=True))
    try:
        await _harvest(settings, store, workspaces, run, ws)
    except wsmod.TooLarge as e:
        await store.transition(run.id, "failed", reason=str(e), expect=("harvesting",))
    except asyncio.CancelledError:  # a shutdown, not a crash: the next start may harvest again
        await asyncio.shield(store.update(run.id, result=run.result))
        raise


async def _harvest(settings: Settings, store: Store, workspaces: Workspaces, run: Run, ws: Workspace) -> None:
    await workspaces.take_in(ws)
    await wsmod.commit_leftovers(ws, wsmod.commit_message(run.task), settings.git)
    base = await workspaces.base_commit(ws)
    commits = [f"{c.sha[:10]} {c.subject}" for c in await wsmod.commits_since(ws, base)]
    result = replace(run.result, branch=ws.branch, base=ws.base_branch, commits=commits)
    if not commits:
        await store.transition(run.id, "completed", expect=("harvesting",), result=replace(result, pushed=False))
        return
    violations = await wsmod.check_branch(
        ws, base, settings.protected_paths, settings.max_file_bytes,
        settings.max_harvest_files, settings.max_harvest_bytes,
    )
    if violations:
        await store.transition(run.id, "failed", reason="the agent's changes break the branch rules",
                               expect=("harvesting",), result=replace(result, violations=violations))
        return
    head = await workspaces.push(ws, ws.branch)
    await store.transition(run.id, "completed", expect=("harvesting",),
                           result=replace(result, pushed=True), head_sha=head)
