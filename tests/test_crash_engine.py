"""kill -9 the bot while runs are queued, preparing and running; after a restart every run ends once."""

import json
import subprocess

import pytest

from bot.runs.containers import INSTANCE_LABEL
from bot.settings import Settings

from .harness import AGENT_KEYS
from .helpers import wait_for
from .process import BotProcess

pytestmark = pytest.mark.docker


def our_containers(data_dir) -> list[str]:
    label = f"{INSTANCE_LABEL}={Settings(data_dir=data_dir).instance}"
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"], capture_output=True, text=True)
    return out.stdout.split()


async def test_every_run_ends_exactly_once_across_kill_9(world, agent_image):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    env = {
        "DISPATCHBOT_IMAGE": agent_image,
        "DISPATCHBOT_MAX_RUNNING": "2",
        "DISPATCHBOT_LIMITS": json.dumps({"memory": "256m", "timeout": 120.0, "grace": 1.0}),
        "DISPATCHBOT_SCHEDULE__DRAIN": "1",
        **AGENT_KEYS,
    }
    bot = BotProcess(forge.url, world["bot"].token, world["tmp"] / "data", **env)
    await bot.start()
    try:
        forge.add_hook(repo, url=bot.url + "/webhook", secret=bot.secret)
        for n in range(6):
            issue = await forge.create_issue(repo, bob, title=f"task {n}", body="")
            await forge.create_comment(repo, issue.number, bob, f"/dispatch codex task {n} scenario:slow-ok:{15 if n == 0 else 3}")

        def states():
            return [s for (s,) in bot.query("SELECT state FROM runs ORDER BY id")]

        await wait_for(lambda: states().count("running") == 2 and states().count("queued") >= 2, timeout=90)
        forge.faults(1.0, kinds=["before_hang"], hang_seconds=60)  # the next claimed run hangs in preparing
        await wait_for(lambda: "preparing" in states() and "running" in states() and "queued" in states(), timeout=90)
        bot.kill()
        forge.faults(0)
        await bot.start()
        await wait_for(lambda: len(states()) == 6 and all(s == "completed" for s in states()), timeout=180)
        for (run_id,) in bot.query("SELECT id FROM runs"):
            moves = [to for (to,) in bot.query("SELECT to_state FROM transitions WHERE run_id = ? ORDER BY id", run_id)]
            assert moves.count("running") == 1, (run_id, moves)
            assert moves.count("completed") == 1, (run_id, moves)
        await wait_for(lambda: our_containers(bot.data_dir) == [], timeout=30)
        for (branch,) in bot.query("SELECT branch FROM runs"):
            assert len(forge.git_log(repo, branch)) == 2  # one commit each: no agent ran twice
    finally:
        await bot.stop()
        for container in our_containers(bot.data_dir):
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
