"""What the stages of a run work with, handed to them explicitly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.executor.docker import DockerExecutor
from bot.gateway.service import Gateway
from bot.runs.preflight import Images
from bot.forge.client import Forge
from bot.settings import Settings
from bot.store import Store
from bot.workspace import Workspaces


@dataclass(frozen=True)
class Tools:
    """A plain record: the composing functions pass each stage only the tools it uses."""

    settings: Settings
    store: Store
    forge: Forge
    executor: DockerExecutor
    workspaces: Workspaces
    login: Callable[[], Awaitable[str]]  # the bot's own account, asked of the Forge once
    images: Images  # what the engine's images hold, for preflight
    gateway: Gateway  # what a container may reach, and its model through it
