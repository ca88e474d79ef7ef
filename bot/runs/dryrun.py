"""Dry runs: the prompt and argv a dispatch would get, prepared exactly like a run's, starting nothing.

A dry run works in a workspace of its own, removed afterwards: the run's workspace may be in use by
an agent at that very moment, and a checkout there would move the branch under its feet.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import aiohttp

from bot.runs.agents import resolve, run_request
from bot.forge.client import Forge
from bot.forge.paths import Repo
from bot.runs.pipeline.prepare import prepare
from bot.services import whoami
from bot.settings import Settings
from bot.store import Run, RunRequest
from bot.workspace import Workspaces, remove_workspace


async def dry_run(
    forge: Forge, settings: Settings, workspaces: Workspaces, request: RunRequest, *, bot: str
) -> tuple[list[str], str]:
    """The argv and prompt ``request`` would get; ``bot`` is the bot's own login. Changes no run
    and no workspace of one."""
    run = replace(Run.draft(request), workspace_key=f"dry-run-{secrets.token_hex(8)}")
    agent = resolve(settings, run.agent_spec)
    try:
        prepared = await prepare(forge, settings, workspaces, run, bot=bot)
    finally:  # the branch names only shape the path's object: its root is what goes
        await remove_workspace(workspaces.existing(run.owner, run.repo, run.workspace_key, "main", "main"))
    return agent.argv(prepared.prompt), prepared.prompt


async def dry_run_issue(
    settings: Settings, owner: str, repo: str, number: int, spec: str, task: str
) -> tuple[list[str], str]:
    """``dispatchbot dry-run``: ``spec`` on ``owner/repo#number`` with ``task`` (default: its title)."""
    agent = resolve(settings, spec)
    async with aiohttp.ClientSession() as session:
        forge = Forge.from_settings(session, settings)
        issue = await forge.getitem(Repo(owner, repo).issue(number))
        request = run_request(
            spec, agent, owner=owner, repo=repo, number=number, is_pull=issue.get("pull_request") is not None,
            task=task or issue.get("title", ""), trigger="dry-run", requested_by="dry-run",
        )
        workspaces = Workspaces.from_settings(settings)
        return await dry_run(forge, settings, workspaces, request, bot=await whoami(forge, settings))
