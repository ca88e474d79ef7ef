"""``dispatchbot dry-run``: the prompt and argv a dispatch would get, without starting anything."""

from __future__ import annotations

import aiohttp

from .agents import resolve, stored_model
from .executor.docker import DockerExecutor
from .forge import Forge
from .forgepaths import Repo
from .runner import Runner
from .services import Services
from .settings import Settings
from .store import Run, RunRequest, Store
from .workspace import Workspaces


async def dry_run(settings: Settings, owner: str, repo: str, number: int, spec: str, task: str) -> tuple[list[str], str]:
    """Prepare the workspace and prompt for ``spec`` on ``owner/repo#number``; returns (argv, prompt)."""
    agent = resolve(settings, spec)
    async with aiohttp.ClientSession() as session:
        forge = Forge.from_settings(session, settings)
        issue = await forge.getitem(Repo(owner, repo).issue(number))
        store = await Store.open(settings.database)
        executor = DockerExecutor(settings.docker_url)
        try:
            services = Services(settings, store, forge)
            runner = Runner(services, executor, Workspaces.from_settings(settings))
            request = RunRequest(
                owner=owner, repo=repo, number=number, is_pull=issue.get("pull_request") is not None,
                agent=agent.name, model=stored_model(spec, agent), pool=agent.pool,
                review=agent.review, task=task or issue.get("title", ""), trigger="dry-run",
                requested_by="dry-run",
            )
            return await runner.dry_run(Run.draft(request))
        finally:
            await executor.close()
            await store.close()
