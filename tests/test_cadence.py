"""Each worker owns its cadence: whatever happened at start, a queued run is claimed."""

import time

import pytest

from .harness import AGENT_KEYS
from .helpers import wait_for
from .process import BotProcess

pytestmark = pytest.mark.docker


async def test_an_issue_labelled_within_100_ms_of_the_start_gets_its_run_started(world, agent_image):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    env = {"DISPATCHBOT_IMAGE": agent_image, "DISPATCHBOT_SCHEDULE__DRAIN": "3",
           "DISPATCHBOT_LIMITS": '{"memory": "256m", "timeout": 60.0, "grace": 1.0}', **AGENT_KEYS}
    bot = BotProcess(forge.url, world["bot"].token, world["tmp"] / "data", **env)
    issue = await forge.create_issue(repo, bob, title="Look around scenario:no-change", body="")
    forge.add_hook(repo, url=bot.url + "/webhook", secret=bot.secret)
    try:
        await bot.start()  # returns at the first answer of /healthz
        started = time.monotonic()
        await forge.set_labels(repo, issue.number, bob, ["dispatch:codex"])  # the delivery is answered
        assert time.monotonic() - started < 0.1

        def moves() -> list[str]:
            return [to for (to,) in bot.query("SELECT to_state FROM transitions ORDER BY id")]

        # Within the runner's resync period (3 s) and the run's own few seconds.
        await wait_for(lambda: "running" in moves(), timeout=15)
        await wait_for(lambda: "completed" in moves(), timeout=30)
    finally:
        await bot.stop()
