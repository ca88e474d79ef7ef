"""Red team: containers running code the agent wrote never share a workspace with host git.

A QA command is the repository's own code, edited by the agent: here it ignores SIGTERM, the worst
it can do short of escaping. The proof is Docker's own record of when the container was destroyed,
against the store's record of when the next run on that workspace was claimed (only a claimed run
runs host git there).
"""

import json
import os
import subprocess
import time

import pytest

from bot.runs.containers import INSTANCE_LABEL, ROLE_LABEL, WORKSPACE_LABEL
from bot.settings import Settings

from .harness import AGENT_KEYS
from .helpers import caught_up, dispatch, ended, wait_for
from .process import BotProcess

pytestmark = pytest.mark.docker

# The first QA on a workspace hangs ignoring SIGTERM (an ignored signal stays ignored across exec);
# later ones pass, so the run after it can complete.
HOSTILE_QA = [
    "sh", "-c",
    "if mkdir /workspace/.meta/qa-hung 2>/dev/null; then trap '' TERM; while :; do sleep 0.1; done; fi; echo qa-ok",
]


def events(since: float, *filters: str) -> list[dict]:
    """Docker's event log since ``since`` (epoch seconds), filtered (``event=destroy``, ...)."""
    argv = ["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}", "--format", "{{json .}}"]
    for f in filters:
        argv += ["--filter", f]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines()]


def destroyed_at(container_id: str, since: float) -> float | None:
    """When Docker destroyed the container (epoch seconds); None if not yet."""
    found = events(since, f"container={container_id}", "event=destroy")
    return found[0]["timeNano"] / 1e9 if found else None


async def hung_qa(bot):
    return [c for c in await bot.engine.runner.containers() if c.labels[ROLE_LABEL] == "qa0" and c.running]


async def test_a_cancelled_workspace_is_claimed_again_only_once_its_hostile_container_is_gone(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot(qa={"acme/widgets": [HOSTILE_QA]}, limits={"grace": 3.0})
    since = time.time()
    issue = await dispatch(world, "/dispatch codex change scenario:edit-commit")
    [hostile] = await bot.wait_for(lambda: hung_qa(bot), timeout=60)
    await forge.create_comment(repo, issue.number, bob, "/cancel")
    first = await bot.wait_for(lambda: _in_state(bot, "cancelled"))
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex again scenario:edit-commit")
    runs = await ended(bot, count=2, timeout=60)
    second = next(r for r in runs if r.id != first.id)
    assert second.state == "completed", second.reason
    gone = await bot.wait_for(lambda: destroyed_at(hostile.id, since), timeout=30)
    cancelled_at = await _moved_at(bot, first.id, "cancelled")
    claimed_at = await _moved_at(bot, second.id, "preparing")
    print(f"time to free a cancelled workspace: {gone - cancelled_at:.2f} s (grace 3 s, SIGTERM ignored)")
    assert hostile.labels[WORKSPACE_LABEL] == str(bot.settings.data_dir / "workspaces/acme/widgets/issue-1")
    assert claimed_at >= gone, f"the next run was claimed {gone - claimed_at:.2f} s before the container was gone"


async def _in_state(bot, state):
    return next((r for r in await bot.store.runs() if r.state == state), None)


async def _moved_at(bot, run_id: int, state: str) -> float:
    [at] = [t.at for t in await bot.store.history(run_id) if t.to_state == state]
    return at


async def test_a_restart_during_qa_removes_the_old_qa_container_before_qa_runs_again(world, agent_image):
    forge, repo = world["forge"], world["repo"]
    env = {
        **AGENT_KEYS, "DISPATCHBOT_IMAGE": agent_image, "DISPATCHBOT_SCHEDULE__DRAIN": "1",
        "DISPATCHBOT_LIMITS": json.dumps({"memory": "256m", "timeout": 60.0, "grace": 1.0}),
        "DISPATCHBOT_QA": json.dumps({"acme/widgets": [HOSTILE_QA]}),
    }
    bot = BotProcess(forge.url, world["bot"].token, world["tmp"] / "data", **env)
    instance = f"{INSTANCE_LABEL}={Settings(data_dir=bot.data_dir).instance}"

    def ours(*filters: str) -> list[str]:
        argv = ["docker", "ps", "-q", "--no-trunc", "--filter", f"label={instance}"]
        out = subprocess.run(argv + [a for f in filters for a in ("--filter", f)], capture_output=True, text=True)
        return out.stdout.split()

    def qa_containers() -> list[str]:
        return ours("label=dispatchbot.role=qa0")

    def state() -> str:
        return "".join(s for (s,) in bot.query("SELECT state FROM runs"))

    since = time.time()
    await bot.start()
    try:
        forge.add_hook(repo, url=bot.url + "/webhook", secret=bot.secret)
        await dispatch(world, "/dispatch codex change scenario:edit-commit")
        [old] = await wait_for(qa_containers, timeout=60)
        bot.kill()
        await bot.start()
        await wait_for(lambda: state() not in ("qa", "harvesting"), timeout=60)
        assert state() == "completed", bot.query("SELECT reason FROM runs")
        gone = destroyed_at(old, since)
        assert gone is not None, "the old QA container was left running"
        created = [e for e in events(since, f"label={instance}", "event=create") if e["id"] != old]
        [again] = [e["timeNano"] / 1e9 for e in created if e["Actor"]["Attributes"]["dispatchbot.role"] == "qa0"]
        assert gone <= again, "QA ran again beside the old QA container"
    finally:
        await bot.stop()
        for container in ours("status=exited") + ours():
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)


@pytest.mark.parametrize("where", ["workspace", "root"])
async def test_a_run_writing_past_its_disk_limit_fails_with_the_reason_and_the_bot_goes_on(world, engine_bot, where):
    """The agent writes 4 MiB every 0.05 s, ignoring SIGTERM, into its clone or its own root file
    system; meanwhile a writer dispatches on another issue: that webhook is answered, stored, run."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot(limits={"disk": "32m"})
    await dispatch(world, f"/dispatch codex fill scenario:fill:{where}")
    await bot.wait_for(lambda: _in_state(bot, "running"))
    other = await forge.create_issue(repo, bob, title="Meanwhile", body="")
    await forge.create_comment(repo, other.number, bob, "/dispatch codex notes scenario:edit-commit")
    runs = await ended(bot, count=2, timeout=60)
    filler = next(r for r in runs if r.number != other.number)
    assert filler.state == "failed" and "past its disk limit" in filler.reason, filler.reason
    held = float(filler.reason.split(" held ")[1].split(" MiB")[0])
    print(f"disk overshoot ({where}): {held - 32:.1f} MiB past the 32 MiB limit at the kill")
    assert held < 32 + 64, "more than a second of writing past the limit"
    assert [r.state for r in runs if r.number == other.number] == ["completed"]
    await _quiet(bot, forge)
    assert forge.deliveries and all(d.ok for d in forge.deliveries), [(d.event, d.status, d.error)
                                                                      for d in forge.deliveries if not d.ok]
    assert await bot.engine.runner.containers() == []
    filled = bot.settings.data_dir / "workspaces/acme/widgets" / f"issue-{filler.number}"
    await bot.wait_for(lambda: not filled.exists(), timeout=10)  # a retry starts from the Forge


async def test_a_run_still_writing_when_the_disk_runs_low_is_stopped_whatever_its_limit(world, engine_bot, tmp_path):
    """The reserve: set 64 MiB below what is free now, so the filler reaches it long before its limit."""
    st = os.statvfs(tmp_path)
    reserve = st.f_bavail * st.f_frsize - (64 << 20)
    bot = await engine_bot(limits={"disk": "10g", "disk_reserve": str(reserve)})
    await dispatch(world, "/dispatch codex fill scenario:fill:workspace")
    [run] = await ended(bot, timeout=60)
    assert run.state == "failed" and "the disk ran low while the run kept writing" in run.reason, run.reason
    left = float(run.reason.split(": ")[1].split(" MiB free")[0])
    print(f"reserve overshoot: {reserve / (1 << 20) - left:.1f} MiB written into the reserve before the kill")
    assert left > reserve / (1 << 20) - 64, "more than a second of writing into the reserve"
    await _quiet(bot, world["forge"])
    deliveries = world["forge"].deliveries
    assert deliveries and all(d.ok for d in deliveries), [(d.event, d.status, d.error) for d in deliveries if not d.ok]
    assert await bot.engine.runner.containers() == []


async def _quiet(bot, forge) -> None:
    """Until the bot has shown every run and written its outbox, and the deliveries its own writes
    caused (labels, comments) are answered: only then may all of them be said to be answered."""
    await bot.wait_for(lambda: caught_up(bot))
    await forge.settle()
