"""A flaky Forge: 20 % of calls fail (5xx or time out, before or after applying) and a 60 s outage
hits in the middle of the runs; every comment, status, label and PR still appears exactly once, and
the final state within 10 s of the Forge's return."""

import asyncio
import collections
import time

import pytest

from .helpers import caught_up, ended

pytestmark = pytest.mark.docker


async def test_everything_appears_exactly_once_in_its_final_state(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot(forge_timeout=2.0, schedule={"drain": 1.0, "redeliver": 2.0})
    # Agents of 30 s: the outage (60 s) begins once both run, and one requeued by a fault while it
    # prepared (a pause of 5 s or more) must still find the other running; they end within the outage.
    issue = await forge.create_issue(repo, bob, title="Add notes scenario:slow-ok:30", body="")
    pull = await forge.create_pull(repo, bob, head="feature", title="Feature", files={"f.py": "x = 1\n"})
    forge.faults(0.2, seed=7, hang_seconds=4.0)
    await forge.set_labels(repo, issue.number, bob, ["dispatch:codex"])
    await forge.create_comment(repo, pull.issue.number, bob, "/dispatch claude polish scenario:slow-ok:30")
    await bot.wait_for(lambda: _both_running(bot), timeout=120)
    await forge.outage(60.0, mode="reset")
    back = time.monotonic() + 60.0
    runs = await ended(bot, count=2, timeout=240)
    assert sorted(r.state for r in runs) == ["completed", "completed"], [r.reason for r in runs]

    await bot.wait_for(lambda: caught_up(bot), timeout=240, interval=0.2)
    recovery = time.monotonic() - back
    print(f"\nfinal state {recovery:.1f} s after the Forge came back")
    calls = "\n".join(f"{r.began - back:6.2f} {r.ended - back:6.2f} {r.method:6} {r.status:3} {r.fault or '':12} {r.path}"
                      for r in forge.requests if r.began > back - 1.5)
    assert recovery < 10.0, f"the calls since the Forge came back (began, ended, in s):\n{calls}"
    forge.faults(0)
    assert len(forge.injected_faults) > 10
    issue_run = next(r for r in runs if not r.is_pull)
    pull_run = next(r for r in runs if r.is_pull)

    def status_comments(number):
        return [c for c in forge.comments(repo, number) if "dispatchbot:run:" in c.body]

    [comment] = status_comments(issue.number)
    assert "✅ completed" in comment.body
    [pr_comment] = status_comments(pull.issue.number)
    assert "✅ completed" in pr_comment.body
    bodies = collections.Counter(c.body for c in forge.comments(repo, issue.number) + forge.comments(repo, pull.issue.number))
    assert all(n == 1 for n in bodies.values())

    agent_pulls = [p for p in forge.pulls(repo) if p.head_branch == issue_run.branch]
    assert len(agent_pulls) == 1 and f"Closes #{issue.number}" in agent_pulls[0].issue.body
    assert {label.name for label in forge.issue(repo, issue.number).labels} == {"dispatch/done"}
    assert {label.name for label in forge.issue(repo, pull.issue.number).labels} == {"dispatch/done"}
    repo_labels = collections.Counter(label.name for label in forge.state.repo_labels(repo))
    assert all(n == 1 for n in repo_labels.values())

    head = forge.branch_sha(repo, "feature")
    statuses = [s for s in forge.statuses(repo, head) if s.context == "dispatchbot/claude"]
    assert [s.state for s in statuses].count("success") == 1 and statuses[-1].state == "success"
    assert forge.stopwatches(world["bot"]) == []
    assert pull_run.head_sha == head


async def _both_running(bot):
    runs = await bot.store.runs(states=["running"])
    return len(runs) == 2


async def test_a_forge_that_goes_down_exactly_at_the_push_delays_the_run_and_it_ends_with_one_pull(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot(forge_timeout=2.0)
    forge.outage_at_push(8.0)
    issue = await forge.create_issue(repo, world["bob"], title="Add notes", body="")
    await forge.create_comment(repo, issue.number, world["bob"], "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot, timeout=120)
    assert run.state == "completed", run.reason
    assert forge.server.at_push is None  # the outage did hit the push
    assert forge.branch_sha(repo, run.branch) == run.head_sha
    await bot.wait_for(lambda: [p for p in forge.pulls(repo) if p.head_branch == run.branch], timeout=60)
    assert len([p for p in forge.pulls(repo) if p.head_branch == run.branch]) == 1


async def test_a_push_the_forge_refuses_fails_the_run_with_the_reason_at_once(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    forge.protect_branch(repo, "agent/*")
    await forge.create_comment(repo, (await forge.create_issue(repo, world["bob"], title="Notes")).number,
                               world["bob"], "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot)
    assert run.state == "failed" and "Not allowed to push to protected branch" in run.reason, run.reason
    assert time.time() - run.started_at < 20  # no waiting for an answer it already had


async def test_a_forge_failing_while_a_run_prepares_is_not_asked_again_by_it_at_once(world, engine_bot):
    """A run requeued because the Forge failed while it prepared waits before its next claim, longer
    after each: each claim costs a clone's setup and several calls to a Forge that is struggling
    (seen failing: claimed again every 1.5 s, as fast as the client's own retries ended)."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot(forge_timeout=2.0)
    issue = await forge.create_issue(repo, bob, title="Add notes", body="")
    forge.faults(1.0, kinds=["before_502"], only=r"^/api/v1/repos/acme/widgets$")  # what preparing asks first
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex add notes scenario:edit-commit")

    async def moves() -> list[str]:
        return [m.to_state for m in await bot.store.history(1)]

    await bot.wait_for(lambda: _has(moves, "preparing"), timeout=30)
    first = time.monotonic()
    # The run's status comment says why it waits (the comments' path is not failing).
    await bot.wait_for(lambda: _comment_says(forge, repo, issue.number, "Reason: the Forge failed while the "
                                             "workspace was prepared"), timeout=8)
    await asyncio.sleep(max(0.0, first + 8.0 - time.monotonic()))  # a window to count in: what did not happen
    claims = (await moves()).count("preparing")
    assert claims <= 2, f"claimed {claims} times in 8 s against a failing Forge"
    forge.faults(0)
    [run] = await ended(bot, timeout=120)
    assert run.state == "completed", run.reason
    assert any(m.reason.startswith("requeued") for m in await bot.store.history(run.id))
    assert time.monotonic() - first < 90


async def _has(moves, state):
    return state in await moves()


async def _comment_says(forge, repo, number, text):
    return any(text in c.body for c in forge.comments(repo, number))
