"""What many test modules share: test-side git and polling for an expected state.

Test modules import from here, never from each other.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from aiohttp import web

from bot.store import ACTIVE

T = TypeVar("T")

# A human (or an agent) committing: a fixed identity, and no user or system config to surprise a test.
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_AUTHOR_NAME": "Human",
    "GIT_AUTHOR_EMAIL": "human@example.test",
    "GIT_COMMITTER_NAME": "Human",
    "GIT_COMMITTER_EMAIL": "human@example.test",
}
# Clones under test usually belong to the container's uid, not ours.
_GIT = ["git", "-c", "safe.directory=*"]


def git(cwd: Path, *args: str) -> str:
    """Test-side git in ``cwd``, standing in for humans and agents; its stripped output."""
    return subprocess.run(
        [*_GIT, "-C", str(cwd), *args], check=True, capture_output=True, text=True, env={**os.environ, **GIT_ENV}
    ).stdout.strip()


async def git_async(*args: str, cwd: Path | None = None, check: bool = True) -> tuple[int, str]:
    """Test-side git that leaves the event loop free, for servers running in the test's own loop
    (the fake Forge's smart HTTP); returns the exit code and the output with stderr."""
    proc = await asyncio.create_subprocess_exec(
        *_GIT, *args, cwd=cwd, env={**os.environ, **GIT_ENV},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if check and proc.returncode:
        raise AssertionError(f"git {' '.join(args)}: {out.decode()}")
    return proc.returncode or 0, out.decode()


async def wait_for(
    predicate: Callable[[], T | Awaitable[T]], timeout: float = 30.0, interval: float = 0.05
) -> T:
    """Poll ``predicate`` (plain or async) until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            name = getattr(predicate, "__qualname__", repr(predicate))
            raise AssertionError(f"timed out after {timeout}s waiting for {name}")
        await asyncio.sleep(interval)


async def dispatch(world, text, *, title="Improve the widgets", author="bob", repo=None):
    """An issue by ``author`` in the world's repository, with the comment ``text``."""
    forge = world["forge"]
    repo = repo or world["repo"]
    issue = await forge.create_issue(repo, world[author], title=title, body="Details in the task.")
    await forge.create_comment(repo, issue.number, world[author], text)
    return issue


async def ended(bot, count=1, timeout=60.0):
    """Wait until ``count`` runs reached a state no agent works in, and return all runs."""

    async def done():
        runs = await bot.store.runs()
        finished = [r for r in runs if r.state not in ACTIVE and r.state != "queued"]
        return runs if len(finished) >= count else None

    return await wait_for(done, timeout=timeout)


def bot_comments(world, number):
    """The bot's comments on issue ``number`` of the world's repository."""
    return [c for c in world["forge"].comments(world["repo"], number) if c.poster.login == "dispatchbot"]


async def caught_up(bot) -> bool:
    """Whether the reporter has shown every run's latest state and written every outbox item."""
    for run in await bot.store.runs():
        if (await bot.store.reported(run.id)).get("version") != run.version:
            return False
    return not await bot.store.due_outbox(now=float("inf"))


async def reported(bot, run_id):
    """Wait until the reporter has shown the run's latest state on the Forge."""

    async def caught_up():
        run = await bot.store.get(run_id)
        return (await bot.store.reported(run_id)).get("version") == run.version and run.state not in ACTIVE

    await wait_for(caught_up, timeout=60)
    return await bot.store.get(run_id)


# Example deliveries as Gitea sent them, signed with SECRET (copies of the reference payloads).
PAYLOADS_DIR = Path(__file__).resolve().parent / "fakeforge" / "data" / "payloads"
EXAMPLES = sorted(p.name.removeprefix("headers-") for p in PAYLOADS_DIR.glob("headers-*.json"))
SECRET = "example-webhook-secret"


def example(name: str) -> tuple[dict[str, str], bytes]:
    """The headers and body of the example delivery ``name`` (``issues-labeled.json``, ...)."""
    meta = json.loads((PAYLOADS_DIR / f"headers-{name}").read_text())
    return meta["headers"], (PAYLOADS_DIR / meta["body_file"]).read_bytes()


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    """``app`` served on the loopback, on a port of its own: (its runner, to clean up; its root URL)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


async def model_api(handler) -> tuple[web.AppRunner, str]:
    """A model API of one route (``POST /v1/messages``) on the loopback: (its runner, its root URL)."""
    app = web.Application()
    app.router.add_post("/v1/messages", handler)
    return await serve(app)
