"""How a run becomes a container: its spec, and the labels that find its containers again.

The labels are the only link between a container and its run that outlives the process: re-adoption
after a restart, the reaper and a cancel all go by them, never by ids kept in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from bot.agents import Agent
from bot.executor.docker import ContainerInfo, ContainerSpec, DockerExecutor, Mount
from bot.settings import Settings
from bot.store import Run
from bot.workspace import Workspace

RUN_LABEL = "dispatchbot.run"
INSTANCE_LABEL = "dispatchbot.instance"
ROLE_LABEL = "dispatchbot.role"  # "agent", or "qa<n>" for the n-th QA command
WORKSPACE_LABEL = "dispatchbot.workspace"
BASE_ENV = {"TERM": "dumb", "NO_COLOR": "1", "CI": "true", "HOME": "/tmp"}
WORKDIR = "/workspace/repo"


def container_spec(
    settings: Settings, run: Run, agent: Agent, ws: Workspace, argv: list[str], role: str = "agent"
) -> ContainerSpec:
    """The container that runs ``argv`` for ``run`` in its workspace, with the agent's image and env."""
    env = dict(BASE_ENV)
    env |= {k: os.environ[k] for k in agent.env if os.environ.get(k)}
    env |= agent.fixed_env
    ident = settings.git
    env |= {
        "GIT_AUTHOR_NAME": ident.name, "GIT_AUTHOR_EMAIL": ident.email,
        "GIT_COMMITTER_NAME": ident.name, "GIT_COMMITTER_EMAIL": ident.email,
    }
    mounts = [Mount(ws.root, "/workspace")]
    mounts += [Mount(Path(d), f"/tmp/{Path(d).name}", read_only=True) for d in agent.credentials]
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
    )


async def containers(executor: DockerExecutor, instance: str, run_id: int | None = None) -> list[ContainerInfo]:
    """This bot's containers, running or not; with ``run_id``, that run's only (agent and QA)."""
    mine = await executor.list(f"{INSTANCE_LABEL}={instance}")
    if run_id is None:
        return mine
    return [c for c in mine if c.labels.get(RUN_LABEL) == str(run_id)]
