"""A hostile agent, end to end (fake Forge, real Docker, the scripted agent performing the attack):
nothing it plants in its clone acts in a later run, its commits cannot take the bot down, and no
file it commits escapes the branch rules."""

import json
import time

import pytest

from bot.store.model import RunResult
from bot.store import RunRequest

from .harness import AGENT_KEYS
from .helpers import dispatch, ended, reported, wait_for
from .process import BotProcess

pytestmark = pytest.mark.docker


async def test_what_one_run_plants_in_git_never_acts_in_the_next_runs_container(world, engine_bot):
    """Run 1 commits, then plants hooks, core.hooksPath, core.fsmonitor, a filter and attributes;
    run 2 on the same issue (same workspace) commits in its own container: none of them runs."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex first scenario:plant-git")
    [first] = await ended(bot)
    assert (await reported(bot, first.id)).state == "completed", first.reason
    meta = bot.settings.data_dir / "workspaces" / "acme" / "widgets" / f"issue-{issue.number}" / ".meta"
    assert not list(meta.glob("carried-*"))  # nothing fired in run 1 itself, after planting
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex second scenario:edit-commit")
    runs = await ended(bot, count=2)
    second = await reported(bot, runs[-1].id)
    assert second.state == "completed", second.reason
    assert second.workspace_key == first.workspace_key
    assert sorted(p.name for p in meta.glob("carried-*")) == []


async def test_a_file_grown_binary_in_a_later_commit_fails_the_run(world, engine_bot):
    """A small big.bin, then 3 MiB of random data over it: every blob the branch adds is checked."""
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    await dispatch(world, "/dispatch codex grow it scenario:grow-bin")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "failed" and "branch rules" in run.reason
    assert "file over 1048576 bytes: big.bin (3145728 bytes)" in run.result.violations
    assert forge.pulls(repo) == [] and forge.branch_sha(repo, run.branch) is None


def _rss_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


BOMB_BLOBS = 300  # 300 MiB of unique 1 MiB blobs: each under max_file_bytes, so each is examined


async def test_a_blob_bomb_fails_the_run_and_the_bot_stays_small(world, agent_image, capsys):
    """The bot as its own process: an agent commits 300 unique 1 MiB blobs. The harvest stops at
    its byte limit, fails the run with the reason, and the bot's peak RSS stays far below the
    bomb's size (the old harvest held every blob at once)."""
    forge, repo = world["forge"], world["repo"]
    env = {
        "DISPATCHBOT_IMAGE": agent_image,
        "DISPATCHBOT_LIMITS": json.dumps({"memory": "256m", "timeout": 120.0, "grace": 1.0}),
        "DISPATCHBOT_MAX_HARVEST_BYTES": str(64 * 1024 * 1024),
        **AGENT_KEYS,
    }
    bot = BotProcess(forge.url, world["bot"].token, world["tmp"] / "data", **env)
    await bot.start()
    try:
        forge.add_hook(repo, url=bot.url + "/webhook", secret=bot.secret)
        start_rss = _rss_kib(bot.proc.pid, "VmRSS")
        await dispatch(world, f"/dispatch codex bomb scenario:blob-bomb:{BOMB_BLOBS}")

        def ended_run():
            rows = bot.query("SELECT state, reason FROM runs")
            return rows if rows and rows[0][0] in ("failed", "completed") else None

        def harvesting():
            return bot.query("SELECT 1 FROM runs WHERE state = 'harvesting'")

        await wait_for(harvesting, timeout=120, interval=0.01)
        harvest_start = time.monotonic()
        [(state, reason)] = await wait_for(ended_run, timeout=120)
        harvest_seconds = time.monotonic() - harvest_start
        assert bot.proc.poll() is None, "the bot died"
        peak = _rss_kib(bot.proc.pid, "VmHWM")
        with capsys.disabled():
            print(f"\nblob bomb of {BOMB_BLOBS} MiB: bot RSS {start_rss // 1024} MiB at start, peak "
                  f"{peak // 1024} MiB; the run {state} {harvest_seconds:.1f}s into its harvest")
        assert state == "failed" and "bytes" in reason, reason
        assert peak - start_rss < 64 * 1024, f"the bot grew by {(peak - start_rss) // 1024} MiB"
    finally:
        await bot.stop()


async def test_a_harvest_the_bot_died_in_is_not_tried_again_after_a_restart(world, make_bot):
    """A run whose harvest was under way when the bot died (killed by the kernel, say) fails with
    the reason when the restarted bot adopts it, instead of killing the bot again."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await make_bot(frozen=True)
    issue = await forge.create_issue(repo, bob, title="Bomb", body="")
    request = RunRequest("acme", "widgets", issue.number, False, "codex", "", "codex", False, "go", "comment", "bob")
    run = await bot.store.request_run(request, trigger_key="bomb")
    await bot.store.update(run.id, branch="agent/bomb", base_branch="main")
    for state in ("preparing", "running", "qa"):
        await bot.store.transition(run.id, state)
    await bot.store.transition(run.id, "harvesting", result=RunResult(harvest_under_way=True))  # as the dead bot left it
    await bot.engine.runner.adopt()
    run = await wait_for(lambda: _ended(bot, run.id))
    assert run.state == "failed" and "not tried again" in run.reason, run.reason


async def _ended(bot, run_id):
    run = await bot.store.get(run_id)
    return run if run.state == "failed" else None
