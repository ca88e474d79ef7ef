"""The dispatch engine end to end: fake Forge, real git, real Docker, scripted agents."""

import asyncio
import time

import pytest

from bot.store import ACTIVE, RunRequest

from .helpers import dispatch, ended

pytestmark = pytest.mark.docker


async def test_an_agent_that_commits_completes_and_its_branch_is_pushed(world, engine_bot):
    bot = await engine_bot()
    await dispatch(world, "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot)
    assert run.state == "completed", run.reason
    assert run.branch.startswith("agent/add-notes") and run.result.pushed
    assert len(run.result.commits) == 1
    log = world["forge"].git_log(world["repo"], run.branch)
    assert log[0].sha == run.head_sha and len(log) == 2
    meta = bot.settings.data_dir / "workspaces" / "acme" / "widgets" / "issue-1" / ".meta"
    assert "argv:" in (meta / "container.log").read_text()
    assert (meta / "prompt.md").read_text().count("scenario:edit-commit") >= 1


async def test_two_issues_asking_the_same_task_push_to_their_own_branches(world, engine_bot):
    bot = await engine_bot()
    first = await dispatch(world, "/dispatch codex add notes scenario:edit-commit", title="One")
    second = await dispatch(world, "/dispatch codex add notes scenario:edit-commit", title="Two")
    runs = await ended(bot, count=2)
    assert [r.state for r in runs] == ["completed", "completed"], [r.reason for r in runs]
    plain = "agent/add-notes-scenario-edit-commit"
    branches = sorted(r.branch for r in runs)
    assert branches[0] == plain and branches[1] in {f"{plain}-issue-{i.number}" for i in (first, second)}, branches
    for run in runs:  # each branch holds its own run's commit on top of the base, nothing of the other's
        log = world["forge"].git_log(world["repo"], run.branch)
        assert log[0].sha == run.head_sha and len(log) == 2


async def test_uncommitted_changes_are_committed_by_the_bot(world, engine_bot):
    bot = await engine_bot()
    await dispatch(world, "/dispatch claude tidy up scenario:edit-uncommitted")
    [run] = await ended(bot)
    assert run.state == "completed", run.reason
    assert len(run.result.commits) == 1 and run.result.pushed


async def test_no_changes_completes_without_a_push(world, engine_bot):
    bot = await engine_bot()
    await dispatch(world, "/dispatch gemini look around scenario:no-change")
    [run] = await ended(bot)
    assert run.state == "completed" and run.result.commits == [] and not run.result.pushed


async def test_blocked_md_blocks_with_the_question(world, engine_bot):
    bot = await engine_bot()
    await dispatch(world, "/dispatch codex migrate scenario:blocked")
    [run] = await ended(bot)
    assert run.state == "blocked" and "?" in run.question


async def test_a_failing_agent_fails_with_the_reason_and_keeps_its_log(world, engine_bot):
    bot = await engine_bot()
    await dispatch(world, "/dispatch codex break scenario:fail")
    [run] = await ended(bot)
    assert run.state == "failed" and run.exit_code == 3 and "code 3" in run.reason
    assert run.result.log_tail


async def test_a_run_queued_by_any_writer_of_the_store_starts_and_is_shown_at_once(world, engine_bot):
    bot = await engine_bot(schedule={"drain": 600.0})  # no timer helps: only the store's commit wakes
    issue = await world["forge"].create_issue(world["repo"], world["bob"], title="Direct", body="")
    request = RunRequest(owner="acme", repo="widgets", number=issue.number, is_pull=False, agent="codex", model="",
                         pool="codex", review=False, task="go scenario:edit-commit", trigger="comment",
                         requested_by="bob")
    assert await bot.store.request_run(request, trigger_key="direct")
    [run] = await ended(bot, timeout=15)
    assert run.state == "completed", run.reason

    async def shown():
        return [c for c in world["forge"].comments(world["repo"], issue.number) if "✅ completed" in c.body]

    await bot.wait_for(shown, timeout=5)


async def test_a_hanging_agent_is_stopped_at_its_timeout(world, engine_bot):
    bot = await engine_bot(limits={"timeout": 3.0})
    start = time.monotonic()
    await dispatch(world, "/dispatch codex wait scenario:hang-ignore-term")
    [run] = await ended(bot, timeout=30)
    assert run.state == "failed" and "limit" in run.reason
    assert time.monotonic() - start < 20
    assert await bot.engine.runner.containers() == []


async def test_qa_failure_fails_the_run_with_its_output(world, engine_bot):
    bot = await engine_bot(qa={"acme/widgets": [["sh", "-c", "echo qa-broke; exit 1"]]})
    await dispatch(world, "/dispatch codex change scenario:edit-commit")
    [run] = await ended(bot)
    assert run.state == "failed" and "QA failed" in run.reason and "qa-broke" in run.result.qa_log


async def test_twenty_requests_against_limit_three_run_three_at_a_time(world, engine_bot):
    bot = await engine_bot(max_running=3)
    await bot.engine.runner.freeze(True)
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    for n in range(20):
        issue = await forge.create_issue(repo, bob, title=f"task {n}", body="")
        await forge.create_comment(repo, issue.number, bob, f"/dispatch codex go {n} scenario:slow-ok:1")
    await bot.settle()
    assert len(await bot.store.runs(states=["queued"])) == 20
    peak = 0

    async def sample():
        nonlocal peak
        while True:
            peak = max(peak, len(await bot.store.runs(states=ACTIVE)))
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    await asyncio.gather(*(bot.engine.runner.freeze(False) for _ in range(5)), bot.engine.runner.drain(),
                         bot.engine.runner.drain())
    runs = await ended(bot, count=20, timeout=240)
    sampler.cancel()
    assert peak == 3
    assert [r.state for r in runs] == ["completed"] * 20
    assert all(r.attempts == 1 for r in runs)


async def test_same_named_workspaces_in_two_repos_stay_apart(world, engine_bot):
    forge = world["forge"]
    other = forge.add_repo("other", "widgets", files={"README.md": "other\n"})
    forge.set_permission(other, "dispatchbot", "admin")
    forge.set_permission(other, "bob", "write")
    bot = await engine_bot()
    forge.add_hook(other, url=bot.url + "/webhook", secret=bot.secret)
    await dispatch(world, "/dispatch codex one scenario:edit-commit")
    await dispatch(world, "/dispatch codex two scenario:fail", repo=other)
    runs = await ended(bot, count=2)
    by_owner = {r.owner: r for r in runs}
    assert by_owner["acme"].state == "completed" and by_owner["other"].state == "failed"
    root = bot.settings.data_dir / "workspaces"
    assert (root / "acme/widgets/issue-1/repo/README.md").read_text() == "# widgets\n"
    assert (root / "other/widgets/issue-1/repo/README.md").read_text() == "other\n"


async def test_completion_applies_to_the_run_whose_container_ended(world, engine_bot):
    bot = await engine_bot()
    await dispatch(world, "/dispatch codex slow scenario:slow-ok:4")
    await dispatch(world, "/dispatch claude quick scenario:fail")
    runs = await ended(bot, count=2)
    states = {r.agent: r.state for r in runs}
    assert states == {"codex": "completed", "claude": "failed"}
    for run in runs:
        moves = [c.to_state for c in await bot.store.history(run.id)]
        assert moves.count(run.state) == 1


async def test_requests_while_frozen_are_kept_and_run_when_thawed(world, engine_bot):
    bot = await engine_bot(frozen=True)
    await dispatch(world, "/dispatch codex later scenario:edit-commit")
    await bot.settle()
    await bot.engine.runner.drain()
    [run] = await bot.store.runs()
    assert run.state == "queued"
    await bot.engine.runner.freeze(False)
    [run] = await ended(bot)
    assert run.state == "completed"


async def test_quick_failures_pause_the_pool(world, engine_bot):
    bot = await engine_bot(backoff={"failures": 3, "window": 60.0, "pause": 1800.0}, pools={"codex": {"limit": 1}})
    for n in range(4):
        await dispatch(world, f"/dispatch codex attempt {n} scenario:fail", title=f"t{n}")
        await bot.settle()  # queued in this order
    await ended(bot, count=3)

    async def paused():
        return (await bot.store.pool("codex")).paused_until > time.time()

    await bot.wait_for(paused)
    await bot.engine.runner.drain()
    runs = await bot.store.runs()
    assert [r.state for r in runs] == ["failed", "failed", "failed", "queued"]
    pool = await bot.store.pool("codex")
    assert pool.paused_until > time.time() + 1700


async def test_model_variants_count_against_their_agents_pool(world, engine_bot):
    bot = await engine_bot(pools={"gemini": {"limit": 1}})
    await dispatch(world, "/dispatch gemini:flash a scenario:slow-ok:2")
    await dispatch(world, "/dispatch gemini:pro b scenario:slow-ok:2")
    runs = await ended(bot, count=2)
    first, second = sorted(runs, key=lambda r: r.started_at)
    assert first.pool == second.pool == "gemini"
    assert second.started_at >= first.ended_at - 0.5


async def test_an_answered_run_resumes_in_its_workspace_and_is_supervised(world, engine_bot):
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex migrate scenario:answer")
    [run] = await ended(bot)
    assert run.state == "blocked"
    await world["forge"].create_comment(world["repo"], issue.number, world["bob"], "/answer use the v2 API")
    await bot.wait_for(lambda: _state(bot, run.id, "completed"), timeout=60)
    run = await bot.store.get(run.id)
    assert run.attempts == 2 and run.answer == "use the v2 API" and run.result.pushed
    moves = [c.to_state for c in await bot.store.history(run.id)]
    assert moves == ["queued", "preparing", "running", "blocked", "queued", "preparing", "running", "qa",
                     "harvesting", "completed"]


async def _state(bot, run_id, state):
    run = await bot.store.get(run_id)
    return run if run.state == state else None
