"""The whole bot on a PostgreSQL store: the same behaviour as on SQLite, end to end (fake Forge,
real git, real Docker, the scripted agent image, a real PostgreSQL server)."""

import asyncio
import logging

import pytest

from bot.store.postgres import connection

from .helpers import bot_comments, dispatch, ended, wait_for

pytestmark = pytest.mark.docker


async def test_a_dispatch_runs_to_a_pushed_branch_with_one_status_comment(world, engine_bot, postgres_url):
    bot = await engine_bot(store_url=postgres_url)
    issue = await dispatch(world, "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot)
    assert run.state == "completed", run.reason
    assert run.result.pushed and world["forge"].git_log(world["repo"], run.branch)[0].sha == run.head_sha
    await wait_for(lambda: _reported(bot), timeout=30)
    assert len(bot_comments(world, issue.number)) == 1
    # Gitea's redelivery of the dispatching comment (a new delivery id) starts nothing: its trigger
    # key is in PostgreSQL.
    comment = next(d for d in world["forge"].deliveries if d.event_type == "issue_comment")
    assert (await world["forge"].redeliver(comment.id)).status == 202
    await bot.settle()
    assert [r.id for r in await bot.store.runs()] == [run.id]


async def _reported(bot):
    return await bot.store.runs_to_report() == []


async def test_postgresql_down_longer_than_a_call_keeps_trying_stops_no_worker(world, engine_bot, postgres_server,
                                                                              postgres_url, monkeypatch, caplog):
    """A store call gives up after ``OUTAGE`` seconds; the runner's and the reporter's loops log it and
    go on, so once PostgreSQL is back a dispatch runs and is reported (seen failing: both loops
    ended for good at the first error while working out their next wake-up)."""
    monkeypatch.setattr(connection, "OUTAGE", 1.0)
    bot = await engine_bot(store_url=postgres_url, schedule={"drain": 0.5})
    runner, reporter = bot.engine.runner._loop, bot.engine.reporter._task
    caplog.set_level(logging.WARNING)
    await asyncio.to_thread(postgres_server.stop)
    try:
        def gave_up() -> bool:
            said = [r.getMessage() for r in caplog.records]
            return any("runner could not drain" in m for m in said) and any("reporting failed" in m for m in said)

        await wait_for(gave_up, timeout=30)
        await asyncio.sleep(2.0)  # more failed passes, each working out its next wake-up against a store down
    finally:
        await asyncio.to_thread(postgres_server.start)
    assert not runner.done() and not reporter.done()
    issue = await dispatch(world, "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot, timeout=90)
    assert run.state == "completed", run.reason
    await wait_for(lambda: _reported(bot), timeout=30)
    assert len(bot_comments(world, issue.number)) == 1
