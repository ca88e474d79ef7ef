"""Wires the dispatch engine: Docker executor, workspaces, runner, reporter and scheduler."""

from __future__ import annotations

import logging

from bot.runs import preflight
from bot.executor.docker import DockerExecutor
from bot.gateway.service import Gateway, GatewayError
from bot.runs.pipeline.tools import Tools
from bot.report.reporter import Reporter
from bot.runs.runner import Runner
from bot.upkeep.sweeper import Scheduler
from bot.services import Services
from bot.workspace import Workspaces

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, services: Services) -> None:
        s = services.settings
        self.services = services
        self.executor = DockerExecutor(s.docker_url)
        self.workspaces = Workspaces.from_settings(s)
        self.gateway = Gateway(s, services.store, self.executor)
        self.tools = Tools(s, services.store, services.forge, self.executor, self.workspaces, services.bot_login,
                           preflight.Images(self.executor, s), self.gateway)
        self.runner = Runner(self.tools)
        self.reporter = Reporter(s, services.store, services.forge, services.bot_login)
        self.scheduler = Scheduler(services, self.runner, self.executor, self.workspaces)

    async def start(self) -> None:
        s = self.services.settings
        if not await self.executor.ping():
            log.error("the Docker engine does not answer; runs stay queued until it does")
        elif await preflight.image_state(self.executor, s.image) == "missing":
            log.error("%s; until then every run on it fails", preflight.image_missing(s, s.image))
        try:
            await self.gateway.ready()
        except GatewayError as e:
            log.error("%s; runs fail until it can", e)
        await self.runner.start()
        await self.reporter.start()
        self.scheduler.start()

    async def stop(self) -> None:
        self.scheduler.stop()
        await self.reporter.stop()
        await self.runner.stop()
        await self.gateway.stop()
        await self.executor.close()

    async def ping(self) -> bool:
        return await self.executor.ping()
