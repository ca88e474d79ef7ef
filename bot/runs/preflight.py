"""Preflight: a run whose agent cannot start or authenticate fails before any container exists.

Without a key codex retries forever (the run ended at its 60-minute timeout), and a missing image
or CLI failed in Docker's words. Here each need is checked up front and a missing one is named in
one sentence the status comment shows. Such a failure is a configuration problem, not the agent's:
the caller fails the run without counting it towards the pool's backoff.

The checks are plain functions of explicit inputs (settings, agent, environment, ``Images``), shared
by the runner, ``dispatchbot doctor`` and ``/healthz``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Mapping
from pathlib import Path

from bot.runs.agents import Agent, resolve
from bot.executor.docker import ContainerSpec, DockerExecutor, ExecutorError, ImageInfo
from bot.image.recipe import CLIS_LABEL  # set by the agent image builder
from bot.settings import Settings

log = logging.getLogger(__name__)

# Marks short check containers (``Images.run``); they carry no run label, so the reaper skips them.
PROBE_LABEL = "dispatchbot.probe"
PROBE_TIMEOUT = 30.0
_SHELL_RAN = "dispatchbot-probe"


def credentials_setting(settings: Settings, agent: Agent) -> str:
    """The setting that names ``agent``'s credential dirs, for messages."""
    custom = settings.agents.get(agent.name)
    return f"agents.{agent.name}.credentials" if custom and custom.credentials else f"credentials.{agent.name}"


def missing_key(settings: Settings, agent: Agent, environ: Mapping[str, str]) -> str | None:
    """Why ``agent`` cannot authenticate, or None: one of the keys it passes on (a custom agent's
    ``env``; none for ``local``) must be set, or one of its credential dirs exist."""
    needed = agent.env
    if not needed or any(environ.get(k) for k in needed):
        return None
    if any(Path(d).is_dir() for d in agent.credentials):
        return None
    names = " or ".join(f"`{k}`" for k in needed)
    reason = f"{agent.name} needs {names} in the bot's environment or `{credentials_setting(settings, agent)}`"
    if agent.credentials:
        reason += f" (configured: {', '.join(f'`{d}`' for d in agent.credentials)}, not a directory)"
    return reason


def image_missing(settings: Settings, image: str) -> str:
    how = "build it with `dispatchbot image build`" if image == settings.image else "build or pull it"
    return f"the image `{image}` is not present on the Docker host: {how}"


async def image_state(executor: DockerExecutor, image: str) -> str:
    """``present``, ``missing``, or ``unknown`` when the engine does not answer."""
    try:
        return "present" if await executor.image(image) else "missing"
    except ExecutorError:
        return "unknown"


def cli_missing(agent: Agent) -> str:
    cli = agent.template[0]
    how = agent.install or f"use an image that has `{cli}` on its PATH"
    return f"the image `{agent.image}` has no `{cli}` CLI; {how}"


def listed_clis(image: ImageInfo) -> dict[str, str]:
    """The image's label ``{cli: version}``; empty for images not built by ``dispatchbot image build``."""
    try:
        clis = json.loads(image.labels.get(CLIS_LABEL) or "{}")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in clis.items()} if isinstance(clis, dict) else {}


class Images:
    """What the engine's images hold, asked through the executor.

    A CLI the image's label lists is there; any other is looked for with ``command -v`` in a short
    container, once per image id and CLI (an image id never changes its content).
    """

    def __init__(self, executor: DockerExecutor, settings: Settings) -> None:
        self._executor = executor
        self._settings = settings
        self._found: dict[tuple[str, str], bool | None] = {}
        self._lock = asyncio.Lock()

    async def get(self, name: str) -> ImageInfo | None:
        return await self._executor.image(name)

    async def has_cli(self, image: ImageInfo, cli: str) -> bool | None:
        """Whether ``cli`` is on the image's PATH; None when that cannot be told (no ``sh`` in it)."""
        if cli in listed_clis(image):
            return True
        key = (image.id, cli)
        async with self._lock:
            if key not in self._found:
                code, output = await self.run(image.id, ["sh", "-c", f'echo {_SHELL_RAN}; command -v "$1"', "sh", cli])
                if code is None:  # the engine failed us: ask again next time
                    return None
                # Without the mark sh itself is missing (init reports 127 for that too).
                self._found[key] = code == 0 if output.startswith(_SHELL_RAN) else None
        return self._found[key]

    async def run(self, image: str, argv: list[str]) -> tuple[int | None, str]:
        """Run ``argv`` in ``image`` without network, mounts or keys; (exit code, output).

        The code is None when the container could not be started at all.
        """
        s = self._settings
        spec = ContainerSpec(
            name=f"dispatchbot-{s.instance}-probe-{secrets.token_hex(4)}",
            image=image, argv=argv, workdir="/", mounts=[], env={"HOME": "/tmp"},
            labels={PROBE_LABEL: s.instance}, limits=s.limits, extra_hosts=[], network="none",
        )
        try:
            container = await self._executor.start(spec)
        except ExecutorError as e:
            log.info("could not run %s in %s: %s", argv[0], image, e)
            return None, ""
        try:
            exit = await self._executor.wait(container, time.time() + PROBE_TIMEOUT, 1.0)
            output = await self._executor.logs(container, limit=4096)
        finally:
            await self._executor.remove(container)
        return exit.code, output.decode(errors="replace").strip()


async def check(settings: Settings, agent: Agent, environ: Mapping[str, str], images: Images) -> str | None:
    """Why ``agent`` cannot run, one clause per missing thing; None when it has what it needs.

    An engine that does not answer is not a finding here: starting the container reports it.
    """
    problems = [p for p in [missing_key(settings, agent, environ)] if p]
    try:
        image = await images.get(agent.image)
        if image is None:
            problems.append(image_missing(settings, agent.image))
        elif agent.template and await images.has_cli(image, agent.template[0]) is False:
            problems.append(cli_missing(agent))
    except ExecutorError as e:
        log.warning("preflight could not inspect the image of %s: %s", agent.name, e)
    return "; ".join(problems) or None


async def problem(settings: Settings, spec: str, environ: Mapping[str, str], images: Images) -> str | None:
    """``check`` for an agent spec as a run stores it; an agent no longer configured is a problem too."""
    try:
        agent = resolve(settings, spec)
    except ValueError as e:
        return str(e)
    return await check(settings, agent, environ, images)
