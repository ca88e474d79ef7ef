"""Stage 4, QA: the repository's QA commands, each in a container like the agent's, in its workspace.

A cancel stops them: the runner kills every container of a cancelled run, and a QA container that
starts just after that checks the run itself.
"""

from __future__ import annotations

import time

from bot import workspace as wsmod
from bot.runs.agents import resolve
from bot.executor.docker import DockerExecutor
from bot.runs.containers import container_spec
from bot.gateway.service import Gateway
from bot.logs import mask, tail
from bot.runs.pipeline.agent import keep_record
from bot.runs.pipeline.judge import failure
from bot.settings import Settings
from bot.store import Run, Store
from bot.workspace import Workspace


async def run_qa(
    settings: Settings, store: Store, executor: DockerExecutor, gateway: Gateway, run: Run, ws: Workspace
) -> tuple[str, str] | None:
    """Run the QA commands in order; (reason, output) of the first that fails, None when all pass."""
    agent = resolve(settings, run.agent_spec)
    await gateway.ready()
    output: list[str] = []
    for index, argv in enumerate(wsmod.qa_commands(settings, run.owner, run.repo, ws.clone)):
        role = f"qa{index}"
        container = await executor.start(container_spec(settings, run, gateway.access(run, agent, role), ws, argv, role))
        try:
            current = await store.get(run.id)
            if current is None or current.state != "qa":  # cancelled while it started
                await executor.kill(container, settings.limits.grace)
            exit = await executor.wait(container, time.time() + settings.limits.timeout, settings.limits.grace)
            text = (await executor.logs(container, limit=settings.limits.log_bytes)).decode(errors="replace")
        finally:
            await executor.remove(container)
            await keep_record(store, gateway, run)
        text = mask(text, settings.secrets())
        output.append(f"$ {' '.join(argv)}\n{text}")
        wsmod.safe_write(ws.meta / "qa.log", "\n".join(output))
        if exit.code != 0 or exit.timed_out or exit.oom_killed:
            reason = failure(exit, settings.limits.timeout) or "failed"
            return f"QA failed: `{' '.join(argv)}`: {reason}", tail(text)
    return None
