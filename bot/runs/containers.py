"""How a run becomes a container: its spec, and the labels that find its containers again.

The labels are the only link between a container and its run that outlives the process: re-adoption
after a restart, the reaper and a cancel all go by them, never by ids kept in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.executor.docker import ContainerInfo, ContainerSpec, DockerExecutor, Mount
from bot.settings import Settings
from bot.store import Run
from bot.workspace import Workspace

if TYPE_CHECKING:
    from bot.gateway.service import Access

RUN_LABEL = "dispatchbot.run"
INSTANCE_LABEL = "dispatchbot.instance"
ROLE_LABEL = "dispatchbot.role"  # "agent", or "qa<n>" for the n-th QA command
WORKSPACE_LABEL = "dispatchbot.workspace"
BASE_ENV = {"TERM": "dumb", "NO_COLOR": "1", "CI": "true"}
WORKDIR = "/workspace/repo"


def container_spec(
    settings: Settings, run: Run, access: Access, ws: Workspace, argv: list[str], role: str = "agent"
) -> ContainerSpec:
    """The container that runs ``argv`` for ``run`` in its workspace, in the agent's image, with
    what the gateway gives it (``access``: run tokens, never keys; its network).

    Only the agent's own container gets its credentials and a token for its model: QA runs the
    repository's commands, which need neither.
    """
    agent = access.agent
    agent_role = role == "agent"
    env = BASE_ENV | access.env | settings.git.env()
    mounts = [Mount(ws.root, "/workspace"), *(agent.mounts() if agent_role else [])]
    return ContainerSpec(
        name=f"dispatchbot-{settings.instance}-run-{run.id}-{run.attempts}-{role}",
        image=agent.image,
        argv=argv,
        workdir=WORKDIR,
        mounts=mounts,
        env=env,
        labels={
            RUN_LABEL: str(run.id), ROLE_LABEL: role, INSTANCE_LABEL: settings.instance,
            WORKSPACE_LABEL: str(ws.root),
        },
        limits=settings.limits,
        network=access.network,
        extra_hosts=access.extra_hosts,
    )


async def containers(executor: DockerExecutor, instance: str, run_id: int | None = None) -> list[ContainerInfo]:
    """This bot's containers, running or not; with ``run_id``, that run's only (agent and QA)."""
    mine = await executor.list(f"{INSTANCE_LABEL}={instance}")
    if run_id is None:
        return mine
    return [c for c in mine if c.labels.get(RUN_LABEL) == str(run_id)]
