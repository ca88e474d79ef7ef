"""The issue's stopwatch follows the agent, so the Forge's time tracking books the agent's time.

Gitea keeps one running stopwatch per user: starting one on another issue silently stops and books
the first. With overlapping runs under one bot account a stopwatch can thus be taken away; when a
run ends, whatever its stopwatch did not book is booked with ``POST /issues/{n}/times``, so the
time on every issue equals its run's wall clock.
"""

from __future__ import annotations

import datetime
import logging

from bot.forge import paths
from bot.forge.client import Forge, ForgeError
from bot.forge.paths import Repo
from bot.store import Run

log = logging.getLogger(__name__)

DISABLED = "disabled"


def _repo(run: Run) -> Repo:
    return Repo(run.owner, run.repo)


async def start(forge: Forge, run: Run) -> str:
    """Start the stopwatch; ``started``, or ``disabled`` when time tracking is off (403)."""
    try:
        await forge.post(_repo(run).stopwatch(run.number, "start"))
    except ForgeError as e:
        if e.status == 403:
            return DISABLED
        if e.status != 409:  # 409: it already runs here
            raise
    return "started"


async def stop(forge: Forge, run: Run, login: str) -> str:
    """Stop the stopwatch and book what it missed; ``stopped`` or ``disabled``."""
    try:
        await forge.post(_repo(run).stopwatch(run.number, "stop"))
    except ForgeError as e:
        if e.status == 403:
            return DISABLED
        if e.status != 409:  # 409: none runs here, another issue's start took it away
            raise
    wall = round((run.ended_at or 0) - (run.started_at or 0))
    missing = wall - await booked(forge, run, login)
    if missing > 0:
        await forge.post(_repo(run).times(run.number), {"time": missing, "created": _rfc3339(run.ended_at)})
    return "stopped"


async def booked(forge: Forge, run: Run, login: str) -> int:
    """Seconds the bot has booked on the issue since this run's agent started."""
    since = _rfc3339((run.started_at or 0) - 1)
    times = await forge.getitem(_repo(run).times(run.number), params={"user": login, "since": since})
    return sum(t.get("time", 0) for t in times or [] if t.get("user_name") == login)


async def reconcile(forge: Forge, active: set[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Delete the bot's stopwatches on issues with no active run; returns where it did."""
    removed = []
    for watch in await forge.getitem(paths.STOPWATCHES) or []:
        where = (watch["repo_owner_name"], watch["repo_name"], int(watch["issue_index"]))
        if where in active:
            continue
        log.warning("deleting a stray stopwatch on %s/%s#%s", *where)
        try:
            await forge.delete(Repo(where[0], where[1]).stopwatch(where[2], "delete"))
        except ForgeError as e:
            if e.status not in (404, 409):
                raise
        removed.append(where)
    return removed


def _rfc3339(at: float | None) -> str:
    return datetime.datetime.fromtimestamp(at or 0, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
