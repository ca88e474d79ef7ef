"""Stage 2, the agent: start its container, mark the run running, wait for the end, keep the output."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from bot import workspace as wsmod
from bot.runs.agents import Agent
from bot.executor.docker import DockerExecutor, ExecutorError, Exit
from bot.runs.containers import container_spec
from bot.gateway.service import Gateway, GatewayError
from bot.runs.disk import Watch
from bot.logs import mask
from bot.settings import Settings
from bot.store import Run, Store
from bot.workspace import Workspace
from bot.workspace import layout

log = logging.getLogger(__name__)

RECONNECT_DELAY = 2.0  # seconds between waits when the Docker engine's connection dropped


async def start(
    settings: Settings, store: Store, executor: DockerExecutor, gateway: Gateway, run: Run, agent: Agent,
    ws: Workspace, prompt: str,
) -> Run | None:
    """Start the agent on a ``preparing`` run; the running run, or None when it ended here.

    A run cancelled meanwhile stays cancelled: its container is stopped before it does anything.
    """
    try:
        await gateway.ready()
        access = gateway.access(run, agent, "agent")
        container = await gateway.start(container_spec(settings, run, access, ws, access.agent.argv(prompt)))
    except (ExecutorError, GatewayError) as e:
        await store.transition(run.id, "failed", reason=str(e), expect=("preparing",))
        return None
    running = await store.transition(
        run.id, "running", expect=("preparing",), container_id=container, started_at=time.time(),
        result=replace(run.result, egress=access.record),
    )
    if running is None:  # cancelled while preparing
        await executor.kill(container, settings.limits.grace)
        await executor.remove(container)
    return running


async def wait(
    settings: Settings, store: Store, executor: DockerExecutor, gateway: Gateway, run: Run, ws: Workspace
) -> tuple[Run, Exit, str]:
    """Wait for a running run's container until its deadline, within its disk, keep its output and
    the gateway's record of it (refused connections, an unreachable model), and remove it. Returns
    the run, how its container ended, and why the bot stopped it ("" if it did not)."""
    deadline = (run.started_at or time.time()) + settings.limits.timeout
    while True:
        try:
            async with Watch(executor, settings.limits, run.container_id, ws.root) as watch:
                exit = await executor.wait(run.container_id, deadline, settings.limits.grace)
            break
        except ExecutorError as e:  # the engine's connection dropped: the container may still run
            log.warning("run %s: lost the Docker engine while waiting, waiting again: %s", run.id, e)
            await asyncio.sleep(RECONNECT_DELAY)
    await _keep_logs(settings, executor, run, ws)
    await executor.remove(run.container_id)
    return await gateway.keep_record(run), exit, watch.reason


async def _keep_logs(settings: Settings, executor: DockerExecutor, run: Run, ws: Workspace) -> None:
    """Keep the agent's output in ``.meta/`` (capped, secrets masked) before the container goes."""
    secrets = settings.secrets()
    limit = settings.limits.log_bytes
    both = mask((await executor.logs(run.container_id, limit=limit)).decode(errors="replace"), secrets)
    out = mask((await executor.logs(run.container_id, stderr=False, limit=limit)).decode(errors="replace"), secrets)
    wsmod.safe_write(ws.meta / layout.CONTAINER_LOG, both)
    wsmod.safe_write(ws.meta / layout.STDOUT_LOG, out)
    last_message = wsmod.safe_read(ws.meta / layout.LAST_MESSAGE, limit)  # written by the agent itself
    if last_message:
        wsmod.safe_write(ws.meta / layout.LAST_MESSAGE, mask(last_message, secrets))
