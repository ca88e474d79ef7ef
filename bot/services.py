"""What handlers are given: the settings, the store, the Forge client and the bot's own login.

Handlers only write the store; the workers wake on what it commits.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from bot.forge import paths
from bot.forge.client import Forge
from bot.settings import Settings
from bot.store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    forge: Forge
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
                    self._login = await whoami(self.forge, self.settings)
        return self._login


async def whoami(forge: Forge, settings: Settings) -> str:
    """The bot's own account: as configured, else as the Forge knows its token (``GET /user``)."""
    return settings.bot_login or (await forge.getitem(paths.USER))["login"]
