"""Wires the dispatch engine: Docker executor, workspaces, runner, reporter and scheduler."""

from __future__ import annotations

import logging

from .executor.docker import DockerExecutor
from .pipeline.tools import Tools
from .reporter import Reporter
from .runner import Runner
from .scheduler import Scheduler
from .services import Services
from .workspace import Workspaces

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, services: Services) -> None:
        s = services.settings
        self.services = services
        self.executor = DockerExecutor(s.docker_url)
        self.workspaces = Workspaces.from_settings(s)
        self.tools = Tools(s, services.store, services.forge, self.executor, self.workspaces, services.bot_login)
        self.runner = Runner(self.tools)
        self.reporter = Reporter(services)
        self.scheduler = Scheduler(services, self.runner, self.executor, self.workspaces, self.reporter)

    async def start(self) -> None:
        if not await self.executor.ping():
            log.error("the Docker engine does not answer; runs stay queued until it does")
        await self.runner.start()
        await self.reporter.start()
        self.scheduler.start()

    async def stop(self) -> None:
        self.scheduler.stop()
        await self.reporter.stop()
        await self.runner.stop()
        await self.executor.close()

    async def ping(self) -> bool:
        return await self.executor.ping()
