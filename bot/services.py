"""What handlers are given: the store, the Forge client, and the hooks that wake the workers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from . import forgepaths
from .forge import Forge
from .settings import Settings
from .store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    forge: Forge
    wake_runner: Callable[[], None] = lambda: None
    wake_reporter: Callable[[], None] = lambda: None
    cancel_run: Callable[[int], None] = lambda run_id: None
    _login: str | None = None
    _login_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def known_login(self) -> str | None:
        """The bot's account if already known; no Forge call."""
        return self._login or self.settings.bot_login

    async def bot_login(self) -> str:
        """The bot's own account, learned once from ``GET /user`` unless configured."""
        if self._login is None:
            async with self._login_lock:
                if self._login is None:
                    self._login = self.settings.bot_login or (await self.forge.getitem(forgepaths.USER))["login"]
        return self._login
