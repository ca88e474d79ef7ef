"""Per-run tokens: what a container holds instead of a key.

A token names its run, attempt and role and is signed with a key the bot keeps in its data dir,
so it survives a restart of the bot (a re-adopted container goes on working) without being stored.
It is good only while its run is active in the store, for that attempt, and until revoked: a
finished run's token, a forged one or a guessed one is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from bot.gateway.observer import Grant
from bot.store import ACTIVE, Run, Store

KEY_FILE = "gateway.key"
CACHE_SECONDS = 1.0  # how long a checked token is believed without asking the store again
_TOKEN = re.compile(r"^dbr-(\d+)-(\d+)-(agent|qa\d*)-([0-9a-f]{40})$")


@dataclass(frozen=True)
class Holder:
    """What a valid token stands for."""

    grant: Grant
    role: str  # "agent" (the model API and the proxy) or "qa<n>" (the proxy only)


def load_key(data_dir: Path) -> bytes:
    """The signing key, made once (readable by the bot's user only)."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


class Grants:
    def __init__(self, key: bytes, store: Store) -> None:
        self._key = key
        self._store = store
        self._checked: dict[str, tuple[float, Holder]] = {}
        self._revoked: set[int] = set()

    def token(self, run: Run, role: str) -> str:
        body = f"dbr-{run.id}-{run.attempts}-{role}"
        return f"{body}-{self._sign(body)}"

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()[:40]

    def revoke(self, run_id: int) -> None:
        """Every later call with one of this run's tokens is refused (its containers are not stopped)."""
        self._revoked.add(run_id)
        self._checked = {t: c for t, c in self._checked.items() if c[1].grant.run_id != run_id}

    async def check(self, token: str) -> Holder | None:
        """Who holds ``token``, or None when it is not a live token of an active run."""
        cached = self._checked.get(token)
        now = time.monotonic()
        if cached and now - cached[0] < CACHE_SECONDS and cached[1].grant.run_id not in self._revoked:
            return cached[1]
        match = _TOKEN.match(token)
        if not match or not hmac.compare_digest(match[4], self._sign(token.rsplit("-", 1)[0])):
            return None
        run_id, attempt, role = int(match[1]), int(match[2]), match[3]
        if run_id in self._revoked:
            return None
        run = await self._store.get(run_id)
        if run is None or run.state not in ACTIVE or run.attempts != attempt:
            self._checked.pop(token, None)
            return None
        holder = Holder(Grant(run.id, run.agent, run.model, f"{run.owner}/{run.repo}", run.pool), role)
        if len(self._checked) > 10_000:  # bounded: a flood of valid tokens cannot grow it
            self._checked.clear()
        self._checked[token] = (now, holder)
        return holder
