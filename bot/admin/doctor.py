"""``dispatchbot doctor``: can each agent run here? Asked before a user finds out from a failed run.

Per agent (the presets and the configured ones) it prints the image and whether the engine has it,
the CLI and its version inside the image (from the image's ``dispatchbot.clis`` label, else
``<cli> --version`` in a short container), the keys and credential dirs it would use (names, never
values), and the endpoint it talks to. The verdict is the runner's own preflight check.

The exit code is 1 when the default agents cannot run at all: the engine does not answer, the
default image is missing, or not one preset is ready. An agent merely lacking its key is reported
but not fatal: an operator configures the agents they have keys for.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass

from bot.runs import preflight
from bot.runs.agents import PRESETS, Agent, known_agents, resolve
from bot.executor.docker import DockerExecutor, ExecutorError, ImageInfo
from bot.gateway.service import credentials_inside
from bot.image.recipe import RECIPE_LABEL
from bot.settings import Settings

@dataclass(frozen=True)
class AgentReport:
    name: str
    image: str
    image_state: str  # "present" (with the recipe of an image built here), "missing" or "unknown"
    cli: str
    version: str
    auth: str
    endpoint: str
    problem: str | None  # None: ready

    def render(self) -> str:
        verdict = "ready" if self.problem is None else f"NOT READY: {self.problem}"
        return "\n".join([
            f"{self.name}: {verdict}",
            f"  image     {self.image} ({self.image_state})",
            f"  cli       {self.cli} {self.version}".rstrip(),
            f"  auth      {self.auth}",
            f"  endpoint  {self.endpoint}",
        ])


def auth(settings: Settings, agent: Agent, environ: Mapping[str, str]) -> str:
    """The keys and credential dirs ``agent`` would use, by name: which are set, which exist."""
    parts = [f"{k} {'set' if environ.get(k) else 'not set'}" for k in agent.env] or ["no key needed"]
    setting = preflight.credentials_setting(settings, agent)
    parts += [f"{setting} {d} ({'present' if os.path.isdir(d) else 'missing'})" for d in agent.credentials]
    if credentials_inside(agent, environ):
        why = "the gateway cannot keep a login out" if any(os.path.isdir(d) for d in agent.credentials) else \
            "its CLI cannot be pointed at the gateway"
        parts.append(f"its credentials are inside the container ({why}; its proxy reaches only the vendor's hosts)")
    return ", ".join(parts)


def endpoint(agent: Agent) -> str:
    """Where the gateway forwards the agent's calls: its configured base URL (``base_urls``,
    ``ollama_url``), else the CLI's default."""
    if agent.endpoint:
        return agent.endpoint
    return f"{agent.cli_endpoint} (the CLI's default)" if agent.cli_endpoint else "the CLI's default"


def _image_state(image: ImageInfo | None) -> str:
    if image is None:
        return "missing"
    recipe = image.labels.get(RECIPE_LABEL)
    return f"present, recipe {recipe[:12]}" if recipe else "present"


class _Versions:
    """CLI versions inside images: the label's, else what ``<cli> --version`` prints, once per image."""

    def __init__(self, images: preflight.Images) -> None:
        self._images = images
        self._seen: dict[tuple[str, str], str] = {}

    async def get(self, image: ImageInfo, cli: str) -> str:
        listed = preflight.listed_clis(image)
        if cli in listed:
            return listed[cli]
        if (image.id, cli) not in self._seen:
            code, output = await self._images.run(image.id, [cli, "--version"])
            lines = output.splitlines()
            self._seen[image.id, cli] = lines[0] if code == 0 and lines else "(version unknown)"
        return self._seen[image.id, cli]


async def diagnose(settings: Settings, environ: Mapping[str, str], images: preflight.Images) -> list[AgentReport]:
    """One report per agent a user may ask for."""
    versions = _Versions(images)
    reports = []
    for name in known_agents(settings):
        try:
            agent = resolve(settings, name)
        except ValueError as e:  # a configured agent whose name or model is refused
            reports.append(AgentReport(name, "", "unknown", "", "", "", "", str(e)))
            continue
        cli = agent.template[0] if agent.template else ""
        version = ""
        try:
            image = await images.get(agent.image)
        except ExecutorError as e:
            image_state, problem = "unknown", f"the Docker engine does not answer: {e}"
        else:
            image_state = _image_state(image)
            if image and await images.has_cli(image, cli) is False:
                version = "(not in the image)"
            elif image:
                version = await versions.get(image, cli)
            problem = await preflight.check(settings, agent, environ, images)
        reports.append(AgentReport(name, agent.image, image_state, cli, version, auth(settings, agent, environ),
                                   endpoint(agent), problem))
    return reports


def exit_code(settings: Settings, reports: list[AgentReport]) -> int:
    """1 when the default agents cannot run at all (see the module's docstring), else 0."""
    presets = [r for r in reports if r.name in PRESETS and r.name not in settings.agents]
    default_image = [r for r in reports if r.image == settings.image]
    if any(r.image_state in ("missing", "unknown") for r in default_image) or not any(r.problem is None for r in presets):
        return 1
    return 0


async def doctor(settings: Settings, environ: Mapping[str, str]) -> int:
    executor = DockerExecutor(settings.docker_url)
    try:
        reports = await diagnose(settings, environ, preflight.Images(executor, settings))
    finally:
        await executor.close()
    for report in reports:
        print(report.render())
    ready = [r.name for r in reports if r.problem is None]
    print(f"\nready: {', '.join(ready) or 'none'}")
    for exposure in settings.exposures():
        print(f"warning: {exposure}")
    return exit_code(settings, reports)


def main(settings: Settings) -> int:
    return asyncio.run(doctor(settings, os.environ))
