"""What the Forge shows, end to end: fake Forge (spec-checked), real Docker, scripted agents."""

import asyncio
import time

import pytest

from bot.runs.containers import ROLE_LABEL
from bot.store import RunRequest

from .helpers import bot_comments, dispatch, ended, reported

pytestmark = pytest.mark.docker


async def test_label_to_pull_request_with_commits_and_closes(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot()
    issue = await forge.create_issue(repo, bob, title="Add notes scenario:edit-commit", body="Please add notes.")
    await forge.set_labels(repo, issue.number, bob, ["kind/feature", "dispatch:codex"])
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed", run.reason
    [pull] = forge.pulls(repo)
    assert pull.head_branch == run.branch and pull.base_branch == "main"
    assert pull.issue.title == "[agent/codex] Add notes scenario:edit-commit"
    assert f"Closes #{issue.number}" in pull.issue.body
    assert forge.branch_sha(repo, run.branch) == pull.head_sha
    [status_comment] = bot_comments(world, issue.number)
    assert "✅ completed" in status_comment.body and f"#{pull.issue.number}" in status_comment.body
    labels = {label.name for label in forge.issue(repo, issue.number).labels}
    assert labels == {"kind/feature", "dispatch/done"}
    booked = sum(t.time for t in forge.tracked_times(repo, issue.number))
    assert abs(booked - (run.ended_at - run.started_at)) <= 5
    assert forge.stopwatches(world["bot"]) == []


async def test_a_state_label_deleted_by_a_maintainer_is_created_again(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    await dispatch(world, "/dispatch gemini look around scenario:no-change")
    [first] = await ended(bot)
    await reported(bot, first.id)
    forge.delete_label(repo, "dispatch/done")  # the bot knows its id from the first run
    issue = await dispatch(world, "/dispatch gemini look again scenario:no-change")
    runs = await ended(bot, count=2)
    await reported(bot, runs[-1].id)
    assert "dispatch/done" in forge.label_names(repo, issue.number)


async def test_overlapping_reporter_passes_post_an_outbox_comment_once(world, make_bot):
    """The reporter's own loop and the scheduler's report job may both call ``sync`` at once: an
    outbox comment and a run's status comment each still appear once."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await make_bot(frozen=True)
    issue = await forge.create_issue(repo, bob, title="Hello", body="")
    await bot.store.enqueue("reply:once", "comment", "acme", "widgets", issue.number, {"body": "only once"})
    request = RunRequest("acme", "widgets", issue.number, False, "codex", "", "codex", False, "go", "comment", "bob")
    run = await bot.store.request_run(request, trigger_key="once")
    await asyncio.gather(*(bot.engine.reporter.sync() for _ in range(3)))  # and the loop, woken by the writes

    async def caught_up():
        shown = (await bot.store.reported(run.id)).get("version") == (await bot.store.get(run.id)).version
        return shown and not await bot.store.due_outbox(now=float("inf"))

    await bot.wait_for(caught_up)
    bodies = [c.body for c in forge.comments(repo, issue.number)]
    assert len(bodies) == 2 and "only once" in bodies and any(f"dispatchbot:run:{run.id} " in b for b in bodies)


async def test_a_run_another_replica_is_reporting_is_left_to_it_not_asked_for_again_and_again(world, make_bot):
    """A replica that finds a run's lease held leaves the run to its holder until something changes
    or the next drain: it does not spin on the lease (seen asking for it thousands of times a second)."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await make_bot(frozen=True, schedule={"drain": 30.0})
    issue = await forge.create_issue(repo, bob, title="Hello", body="")
    request = RunRequest("acme", "widgets", issue.number, False, "codex", "", "codex", False, "go", "comment", "bob")
    asked: list[str] = []  # the leases this replica asked for
    take_lease = bot.store.take_lease

    async def counted(name, holder, ttl):
        if holder != "elsewhere" and name.startswith("report:run:"):
            asked.append(name)
        return await take_lease(name, holder, ttl)

    bot.store.take_lease = counted
    assert await bot.store.take_lease("report:run:1", "elsewhere", 60.0)  # the other replica's
    run = await bot.store.request_run(request, trigger_key="held")
    assert run.id == 1
    await bot.wait_for(lambda: asked, timeout=5)
    await asyncio.sleep(1.0)  # a window to count in: what is measured is what did not happen
    assert len(asked) <= 2, f"the lease was asked for {len(asked)} times in 1 s"
    assert forge.comments(repo, issue.number) == []  # left to its holder indeed


async def test_a_hanging_forge_call_holds_up_only_its_own_issue(world, make_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await make_bot(frozen=True, forge_timeout=20.0)
    one = await forge.create_issue(repo, bob, title="One", body="")
    two = await forge.create_issue(repo, bob, title="Two", body="")
    forge.faults(1.0, kinds=["before_hang"], hang_seconds=30.0, only=rf"/issues/{one.number}/comments$")
    await bot.store.enqueue("reply:one", "comment", "acme", "widgets", one.number, {"body": "to one"})
    await bot.store.enqueue("reply:two", "comment", "acme", "widgets", two.number, {"body": "to two"})
    hanging = asyncio.ensure_future(bot.engine.reporter.sync())
    try:
        await bot.wait_for(lambda: _commented(forge, repo, two.number), timeout=5)
        assert forge.comments(repo, one.number) == [] and forge.injected_faults
    finally:
        forge.faults(0)
        hanging.cancel()
        await asyncio.gather(hanging, return_exceptions=True)


async def _commented(forge, repo, number):
    return forge.comments(repo, number)


async def test_pr_comment_pushes_to_the_pr_branch_with_a_success_status(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot()
    pull = await forge.create_pull(repo, bob, head="feature", title="Feature", files={"feature.py": "x = 1\n"})
    before = forge.branch_sha(repo, "feature")
    await forge.create_comment(repo, pull.issue.number, bob, "/dispatch claude polish it scenario:edit-commit")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed" and run.branch == "feature"
    after = forge.branch_sha(repo, "feature")
    assert after != before and forge.git_log(repo, "feature")[1].sha == before
    statuses = forge.statuses(repo, after)
    assert [(s.state, s.context) for s in statuses][-1] == ("success", "dispatchbot/claude")
    assert len(forge.pulls(repo)) == 1


async def test_review_becomes_one_review_with_inline_comments(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot(review_agent="codex:review")
    files = {"src/app.py": "import os\nprint('hi')\nprint('more')\n", "docs/notes.md": "one\ntwo\n"}
    pull = await forge.create_pull(repo, bob, head="feature", title="Feature", files=files)
    await forge.create_comment(repo, pull.issue.number, bob, "/review")  # codex:review
    [run] = await ended(bot)
    assert run.review
    run = await reported(bot, run.id)
    assert run.state == "completed", run.reason
    [review] = forge.reviews(repo, pull.issue.number)
    assert review.state == "COMMENT" and review.reviewer.login == "dispatchbot"
    assert review.comments, review.body
    changed = set(files)
    for comment in review.comments:
        assert comment.path in changed and comment.line > 0
    assert forge.git_log(repo, "feature")[0].sha == pull.head_sha  # never pushes


async def test_blocked_question_then_answer_completes_in_the_same_comment(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex migrate scenario:answer")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "blocked"
    [comment] = bot_comments(world, issue.number)
    assert "/answer" in comment.body and "> " in comment.body
    assert "dispatch/blocked" in {label.name for label in forge.issue(repo, issue.number).labels}
    await forge.create_comment(repo, issue.number, bob, "/answer use the v2 API")
    await bot.wait_for(lambda: _completed(bot, run.id), timeout=60)
    run = await reported(bot, run.id)
    [comment] = bot_comments(world, issue.number)
    assert "✅ completed" in comment.body
    assert len(forge.pulls(repo)) == 1


async def test_cancel_kills_a_hanging_agent_within_five_seconds(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex wait scenario:hang")
    await bot.wait_for(lambda: _running(bot))
    start = time.monotonic()
    await forge.create_comment(repo, issue.number, bob, "/cancel")
    await bot.wait_for(lambda: _no_containers(bot), timeout=10)
    assert time.monotonic() - start < 5
    [run] = await bot.store.runs()
    run = await reported(bot, run.id)
    assert run.state == "cancelled" and "@bob" in run.reason
    assert forge.stopwatches(world["bot"]) == []
    assert "🚫 cancelled" in bot_comments(world, issue.number)[0].body


async def test_cancel_stops_a_hanging_qa_container_within_five_seconds(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot(qa={"acme/widgets": [["sleep", "300"]]})
    issue = await dispatch(world, "/dispatch codex change scenario:edit-commit")
    await bot.wait_for(lambda: _qa_containers(bot))
    start = time.monotonic()
    await forge.create_comment(repo, issue.number, bob, "/cancel")
    await bot.wait_for(lambda: _no_containers(bot), timeout=10)
    assert time.monotonic() - start < 5
    [run] = await bot.store.runs()
    assert run.state == "cancelled" and "@bob" in run.reason


async def _qa_containers(bot):
    return [c for c in await bot.engine.runner.containers() if c.labels[ROLE_LABEL] == "qa0" and c.running]


async def test_a_command_gets_an_eyes_reaction_within_a_second(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot(frozen=True)
    issue = await forge.create_issue(repo, bob, title="x", body="")
    start = time.monotonic()
    comment = await forge.create_comment(repo, issue.number, bob, "/dispatch codex go")
    await bot.wait_for(lambda: _reacted(forge, comment.id), timeout=5, interval=0.01)
    assert time.monotonic() - start < 1.0


async def test_overlapping_runs_book_their_own_wall_clock_and_leave_no_stopwatch(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    first = await dispatch(world, "/dispatch codex long scenario:slow-ok:6")
    await bot.wait_for(lambda: _running(bot))
    await asyncio.sleep(1.5)
    second = await dispatch(world, "/dispatch claude short scenario:slow-ok:2")
    runs = await ended(bot, count=2)
    for run in runs:
        run = await reported(bot, run.id)
        booked = sum(t.time for t in forge.tracked_times(repo, run.number))
        assert abs(booked - (run.ended_at - run.started_at)) <= 5, (run.number, booked)
    assert {first.number, second.number} == {r.number for r in runs}
    assert forge.stopwatches(world["bot"]) == []


async def test_a_start_whose_answer_was_lost_is_still_stopped_and_booked(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    forge.faults(1.0, kinds=["after_500"], only=r"/stopwatch/start$")  # every start runs, then answers 500
    issue = await dispatch(world, "/dispatch codex work scenario:slow-ok:3")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert any(f.path.endswith("/stopwatch/start") for f in forge.injected_faults)
    assert forge.stopwatches(world["bot"]) == []
    booked = sum(t.time for t in forge.tracked_times(repo, issue.number))
    assert abs(booked - (run.ended_at - run.started_at)) <= 5, booked


async def test_time_tracking_disabled_is_said_once_and_the_run_goes_on(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    forge.set_time_tracking(repo, False)
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex go scenario:edit-commit")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed"
    [comment] = bot_comments(world, issue.number)
    assert comment.body.count("Time tracking is disabled") == 1


async def _completed(bot, run_id):
    return (await bot.store.get(run_id)).state == "completed"


async def _running(bot):
    return await bot.store.runs(states=["running"])


async def _no_containers(bot):
    runs = await bot.store.runs()
    return runs and runs[0].state == "cancelled" and not await bot.engine.runner.containers()


async def _reacted(forge, comment_id):
    return any(r.content == "eyes" for r in forge.reactions(comment_id))


async def test_retry_runs_the_last_failed_run_again_and_help_lists_agents(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex try scenario:fail")
    [failed] = await ended(bot)
    assert failed.state == "failed"
    await forge.create_comment(repo, issue.number, bob, "/retry\n/help")
    runs = await ended(bot, count=2)
    retried = runs[-1]
    assert (retried.retry_of, retried.agent, retried.task, retried.trigger) == (failed.id, "codex", failed.task, "retry")
    await reported(bot, retried.id)
    await bot.engine.reporter.sync()
    help_reply = [c for c in bot_comments(world, issue.number) if "Commands" in c.body]
    assert len(help_reply) == 1 and "`/dispatch <agent>[:<model>] [task]`" in help_reply[0].body
    assert "`gemini`" in help_reply[0].body


async def test_the_agent_echoes_a_run_token_and_never_the_key_in_logs_and_comments(world, engine_bot, monkeypatch):
    """The key stays in the bot (the gateway swaps the run token for it); masking is tested in test_logs."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-very-secret-value")
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex leak scenario:secret-echo")
    [run] = await ended(bot)
    await reported(bot, run.id)
    meta = bot.settings.data_dir / "workspaces/acme/widgets/issue-1/.meta"
    for log in ((meta / "container.log").read_text(), (meta / "agent-codex.log").read_text(), run.result.summary):
        assert "sk-test-very-secret-value" not in log and "CODEX_API_KEY=dbr-1-" in log
    for comment in forge.comments(repo, issue.number):
        assert "sk-test-very-secret-value" not in comment.body
    token = world["bot"].token
    for path in bot.settings.data_dir.rglob("*"):
        if path.is_file() and path.suffix != ".sqlite3" and "objects" not in path.parts:
            assert token not in path.read_text(errors="ignore"), path


async def test_the_agents_question_holds_no_key_in_the_store_or_the_comment(world, engine_bot, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-very-secret-value")
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex ask scenario:secret-question")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "blocked" and "CODEX_API_KEY=dbr-1-" in run.question, run.question
    assert "sk-test-very-secret-value" not in run.question
    [comment] = bot_comments(world, issue.number)
    assert "CODEX_API_KEY=dbr-1-" in comment.body and "sk-test-very-secret-value" not in comment.body


async def test_a_head_the_agent_broke_fails_the_run_and_frees_its_slot(world, engine_bot):
    """An error past the agent (here the harvest refusing a HEAD that names a file elsewhere) ends
    the run as failed, with the reason on the Forge, instead of leaving it active and supervised forever."""
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex plant scenario:bad-head")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    expected = "could not finish the run: the agent's HEAD names no commit"
    assert run.state == "failed" and run.reason.startswith(expected), run.reason
    [comment] = bot_comments(world, issue.number)
    assert "HEAD names no commit" in comment.body
    await bot.wait_for(lambda: not bot.engine.runner.supervised)


async def test_reconcile_deletes_a_stray_stopwatch_but_keeps_an_active_runs(world, engine_bot):
    import aiohttp

    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot()
    stray = await forge.create_issue(repo, bob, title="stray", body="")
    async with aiohttp.ClientSession(headers={"Authorization": f"token {world['bot'].token}"}) as http:
        async with http.post(f"{forge.url}/api/v1/repos/acme/widgets/issues/{stray.number}/stopwatch/start") as r:
            assert r.status == 201
    await bot.engine.reporter.reconcile()
    assert forge.stopwatches(world["bot"]) == []
    issue = await dispatch(world, "/dispatch codex wait scenario:hang")
    await bot.wait_for(lambda: _watching(forge, world["bot"], issue.number))
    await bot.engine.reporter.reconcile()
    assert [w.issue.number for w in forge.stopwatches(world["bot"])] == [issue.number]
    await forge.create_comment(repo, issue.number, bob, "/cancel")
    await bot.wait_for(lambda: _no_containers(bot), timeout=10)


async def _watching(forge, user, number):
    return [w for w in forge.stopwatches(user) if w.issue.number == number]
