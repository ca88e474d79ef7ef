"""A comment flood (#17): how many replies and outbox rows one hostile comment makes.

Starts the bot in-process against the fake Forge (frozen: no agent runs), then a user without write
access posts, on issues of their own: a comment of 1,000 ``/help`` lines, and a comment of about
4.5 MB of ``/dispatch`` lines (each a parse error; the bot takes deliveries up to 5 MiB). For each it
prints the outbox rows the comment made, the replies the bot posted, and how long handling took. A
writer's ``/help`` on another issue is posted right after the big one: the time until it is answered
shows whether the flood delays other issues.

    python bench/flood.py [--big-bytes 4500000]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fakeforge import FakeForge  # noqa: E402
from tests.harness import BotHarness  # noqa: E402
from tests.helpers import wait_for  # noqa: E402


async def flood(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    forge = FakeForge(root=root / "forge")
    await forge.start()
    bot_user, rita, bob = forge.add_user("dispatchbot"), forge.add_user("rita"), forge.add_user("bob")
    repo = forge.add_repo("acme", "widgets", files={"README.md": "# widgets\n"})
    forge.set_permission(repo, "dispatchbot", "admin")
    forge.set_permission(repo, "bob", "write")
    bot = BotHarness(forge, bot_user.token, root / "bot", frozen=True)
    await bot.start()
    forge.add_hook(repo, url=bot.url + "/webhook", secret=bot.secret)
    try:
        for name, body in (("1,000 /help lines", "/help\n" * 1000),
                           (f"{args.big_bytes / 1e6:.1f} MB of /dispatch lines", "/dispatch\n" * (args.big_bytes // 10))):
            issue = await forge.create_issue(repo, rita, title="Flood", body="")
            start = time.monotonic()
            await forge.create_comment(repo, issue.number, rita, body)
            await bot.settle()
            handled = time.monotonic() - start
            other = await forge.create_issue(repo, bob, title="Meanwhile", body="")
            asked = time.monotonic()
            await forge.create_comment(repo, other.number, bob, "/help")
            await wait_for(lambda n=other.number: _replies(forge, repo, n), timeout=3600, interval=0.1)
            answered = time.monotonic() - asked
            rows = _outbox_rows(bot.settings.database, issue.number)
            await wait_for(lambda: _drained(bot), timeout=3600, interval=0.2)
            print(f"{name}: {rows} outbox rows, {len(_replies(forge, repo, issue.number))} replies,"
                  f" handled in {handled:.1f} s; a writer's /help on another issue answered in {answered:.1f} s")
    finally:
        await bot.stop()
        await forge.close()


def _replies(forge, repo, number):
    return [c for c in forge.comments(repo, number) if c.poster.login == "dispatchbot"]


def _outbox_rows(database: Path, number: int) -> int:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT COUNT(*) FROM outbox WHERE number = ? AND kind = 'comment'", (number,)).fetchone()[0]


async def _drained(bot) -> bool:
    return (await bot.store.census()).outbox == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-bytes", type=int, default=4_500_000)
    asyncio.run(flood(parser.parse_args()))


if __name__ == "__main__":
    main()
