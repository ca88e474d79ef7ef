"""Who may steer the bot: write access checked live with the Forge, never taken from a payload."""

from __future__ import annotations

from bot.forge.client import Forge, ForgeError
from bot.forge.paths import Repo
from bot.settings import Settings

WRITE = frozenset({"write", "admin", "owner"})


async def can_write(forge: Forge, settings: Settings, owner: str, repo: str, login: str) -> bool:
    """True for users listed in ``allowed_users`` or with write access; an unknown user has none.

    A 403 (the bot's account is not repo admin) and transient errors propagate: callers decide
    whether to fail closed or to try again later.
    """
    if login in settings.allowed_users:
        return True
    try:
        answer = await forge.getitem(Repo(owner, repo).permission(login))
    except ForgeError as e:
        if e.status == 404:
            return False
        raise
    return answer.get("permission") in WRITE
