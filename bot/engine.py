"""The workers: the heartbeat, the runner, the reporter and the timed jobs, over the parts the app built once."""

from __future__ import annotations

import logging
from functools import partial

from bot.runs import preflight
from bot.runs.pipeline import flow
from bot.gateway.service import GatewayError
from bot.report.reporter import Reporter
from bot.runs.runner import Runner
from bot.upkeep.replicas import Heartbeat
from bot.upkeep.sweeper import Scheduler
from bot.services import Services

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, services: Services) -> None:
        s = services
        self.runner = Runner(s.settings, s.store, s.executor, s.workspaces,
                             launch=partial(flow.launch, s), resume=partial(flow.resume, s), clock=s.clock,
                             replica=s.replica)
        self.reporter = Reporter(s.settings, s.store, s.forge, s.bot_login, s.replica)
        self.heartbeat = Heartbeat(s.settings, s.store, s.replica)
        self.scheduler = Scheduler(s, self.runner, self.heartbeat)
        self._services = s

    async def start(self) -> None:
        s, executor = self._services.settings, self._services.executor
        for exposure in s.exposures():
            log.warning("security: %s", exposure)
        if not await executor.ping():
            log.error("the Docker engine does not answer; runs stay queued until it does")
        elif await preflight.image_state(executor, s.image) == "missing":
            log.error("%s; until then every run on it fails", preflight.image_missing(s, s.image))
        try:
            await self._services.gateway.ready()
        except GatewayError as e:
            log.error("%s; runs fail until it can", e)
        await self.heartbeat.start()  # alive (again) before it adopts its runs
        await self.runner.start()
        await self.reporter.start()
        self.scheduler.start()

    async def stop(self) -> None:
        await self.scheduler.stop()
        await self.reporter.stop()
        await self.runner.stop()
        await self.heartbeat.stop()
        await self._services.gateway.stop()
