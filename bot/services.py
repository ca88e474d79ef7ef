"""The parts the bot shares, built once at start: settings, store, Forge client, Docker executor,
workspaces, the images' contents, the model gateway and the bot's own login.

Handlers, the pipeline's stages, the workers and the operations are each handed this record and
use only the parts they need. Handlers only write the store; the workers wake on what it commits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.executor.docker import DockerExecutor
from bot.forge import paths
from bot.forge.client import Forge
from bot.gateway.service import Gateway
from bot.runs.preflight import Images
from bot.settings import Settings
from bot.store import Store
from bot.upkeep.replicas import own_id
from bot.usage.budgets import Clock
from bot.usage.metering import Metering
from bot.workspace import Workspaces


@dataclass
class Services:
    settings: Settings
    store: Store
    forge: Forge
    executor: DockerExecutor
    workspaces: Workspaces
    images: Images  # what the images hold, for preflight
    gateway: Gateway  # what a container may reach, and its model through it
    metering: Metering  # what the gateway's model calls use, held to the budgets
    clock: Clock  # the time budgets count by (a test moves it)
    replica: str  # this replica's name in the store: it owns the runs it claims (``upkeep.replicas``)
    _login: str | None = None
    _login_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @classmethod
    def create(cls, settings: Settings, store: Store, forge: Forge) -> Services:
        """The executor, workspaces, images and gateway (metering every model call) as the settings
        say; ``close`` releases them."""
        executor = DockerExecutor(settings.docker_url)
        clock = Clock()
        metering = Metering(settings, store, clock)
        return cls(settings, store, forge, executor, Workspaces.from_settings(settings), Images(executor, settings),
                   Gateway(settings, store, executor, metering), metering, clock, own_id(settings))

    async def close(self) -> None:
        await self.metering.close()
        await self.executor.close()

    @property
    def known_login(self) -> str | None:
        """The bot's account if already known; no Forge call."""
        return self._login or self.settings.bot_login

    async def bot_login(self) -> str:
        """The bot's own account, learned once from ``GET /user`` unless configured."""
        if self._login is None:
            async with self._login_lock:
                if self._login is None:
                    self._login = await whoami(self.forge, self.settings)
        return self._login


async def whoami(forge: Forge, settings: Settings) -> str:
    """The bot's own account: as configured, else as the Forge knows its token (``GET /user``)."""
    return settings.bot_login or (await forge.getitem(paths.USER))["login"]
