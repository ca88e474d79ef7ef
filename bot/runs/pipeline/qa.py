"""Stage 4, QA: the repository's QA commands, each in a container like the agent's, in its workspace.

A cancel stops them: the runner kills every container of a cancelled run, and a QA container that
starts just after that checks the run itself. QA resumed after a restart starts over, once the QA
containers of the previous process are removed: they run the agent's code, so none is left running.
"""

from __future__ import annotations

import time

from bot import workspace as wsmod
from bot.runs.agents import resolve
from bot.executor.docker import DockerExecutor
from bot.gateway.service import Gateway
from bot.runs.containers import ROLE_LABEL, container_spec, containers
from bot.runs.disk import Watch
from bot.logs import mask, tail
from bot.runs.pipeline.judge import failure
from bot.settings import Settings
from bot.store import Run, Store
from bot.workspace import Workspace, remove_workspace
from bot.workspace import layout


async def run_qa(
    settings: Settings, store: Store, executor: DockerExecutor, gateway: Gateway, run: Run, ws: Workspace
) -> tuple[str, str] | None:
    """Run the QA commands in order; (reason, output) of the first that fails, None when all pass."""
    agent = resolve(settings, run.agent_spec)
    await gateway.ready()
    for left in await containers(executor, settings.instance, run.id):
        if left.labels.get(ROLE_LABEL, "").startswith("qa"):
            await executor.remove(left.id)
    output: list[str] = []
    for index, argv in enumerate(wsmod.qa_commands(settings, run.owner, run.repo, ws.clone)):
        role = f"qa{index}"
        container = await gateway.start(container_spec(settings, run, gateway.access(run, agent, role), ws, argv, role))
        try:
            current = await store.get(run.id)
            if current is None or current.state != "qa":  # cancelled while it started
                await executor.kill(container, settings.limits.grace)
            async with Watch(executor, settings.limits, container, ws.root) as watch:
                exit = await executor.wait(container, time.time() + settings.limits.timeout, settings.limits.grace)
            text = (await executor.logs(container, limit=settings.limits.log_bytes)).decode(errors="replace")
        finally:
            await executor.remove(container)
            await gateway.keep_record(run)
        text = mask(text, settings.secrets())
        if watch.reason:  # see bot.runs.disk: what it wrote must not weigh on the next run
            await remove_workspace(ws)
            return f"QA failed: `{' '.join(argv)}`: {watch.reason}", tail(text)
        output.append(f"$ {' '.join(argv)}\n{text}")
        wsmod.safe_write(ws.meta / layout.QA_LOG, "\n".join(output))
        if exit.code != 0 or exit.timed_out or exit.oom_killed:
            reason = failure(exit, settings.limits.timeout) or "failed"
            return f"QA failed: `{' '.join(argv)}`: {reason}", tail(text)
    return None
