"""The whole bot on a PostgreSQL store: the same behaviour as on SQLite, end to end (fake Forge,
real git, real Docker, the scripted agent image, a real PostgreSQL server)."""

import pytest

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
