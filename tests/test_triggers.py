"""Labels and comment commands, delivered by the fake Forge as Gitea would, recorded as requests."""

import pytest

from .helpers import reported


@pytest.fixture
async def bot(make_bot):
    return await make_bot(frozen=True)  # requests are recorded, nothing starts


async def runs(bot, **filters):
    return await bot.store.runs(**filters)


async def bot_comments(world, number):
    """Comments the bot posted, once its reporter has caught up."""
    return [c for c in world["forge"].comments(world["repo"], number) if c.poster.login == "dispatchbot"]


async def test_a_trigger_label_requests_one_run_and_redeliver_adds_nothing(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="Crash when saving settings", body="It crashes.")
    await forge.set_labels(repo, issue.number, bob, ["kind/bug", "dispatch:codex"])
    await bot.settle()
    [run] = await runs(bot)
    assert (run.agent, run.state, run.trigger, run.requested_by) == ("codex", "queued", "label", "bob")
    assert run.task == "Crash when saving settings"
    await reported(bot, run.id)
    assert "dispatch/queued" in forge.label_names(repo, issue.number)
    await forge.redeliver(forge.deliveries[-1].id)  # same body, new delivery id
    labels = ["kind/bug", "dispatch:codex", "dispatch/queued", "prio/high"]  # as the Forge's page sends them
    await forge.set_labels(repo, issue.number, bob, labels)  # still active
    await bot.settle()
    assert len(await runs(bot)) == 1
    await bot.wait_for(lambda: _without(forge, repo, issue.number, "dispatch:codex"))  # accepted: label removed
    assert "dispatch/queued" in forge.label_names(repo, issue.number)


async def test_a_trigger_label_added_again_within_the_same_second_is_removed_again(world, bot):
    """Gitea's timestamps are whole seconds: a label added again in the second it was removed
    comes with the same ``updated_at`` as before, and must not stay on the issue for good."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="Fix it", body="")
    forge.freeze_clock()
    for _ in range(2):
        await forge.set_labels(repo, issue.number, bob, [*forge.label_names(repo, issue.number), "dispatch:codex"])
        await bot.wait_for(lambda: _without(forge, repo, issue.number, "dispatch:codex"))
    assert len(await runs(bot)) == 1  # the run it asked for is still queued


async def test_two_trigger_labels_request_two_agents_and_model_variants_share_the_pool(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="Speed up", body="")
    await forge.set_labels(repo, issue.number, bob, ["dispatch:gemini:flash", "dispatch:claude"])
    await bot.settle()
    got = sorted((r.agent, r.model, r.pool) for r in await runs(bot))
    assert got == [("claude", "", "claude"), ("gemini", "flash", "gemini")]


async def test_a_reader_is_refused_once_per_issue(world, bot):
    forge, repo, rita = world["forge"], world["repo"], world["rita"]
    issue = await forge.create_issue(repo, rita, title="Please", body="")
    await forge.create_comment(repo, issue.number, rita, "/dispatch codex do it")
    await forge.create_comment(repo, issue.number, rita, "/dispatch claude do it now")
    await bot.settle()
    assert await runs(bot) == []
    await bot.wait_for(lambda: bot_comments(world, issue.number))
    await bot.engine.reporter.sync()  # anything still queued would be posted now
    replies = await bot_comments(world, issue.number)
    assert len(replies) == 1 and "only users with write access" in replies[0].body and "@rita" in replies[0].body


async def test_a_readers_trigger_label_is_refused_once_and_removed_so_a_writers_later_edit_starts_nothing(world, bot):
    """Gitea's label_updated carries the whole label set: a reader's label left behind would start
    a run as soon as a writer touched any label."""
    forge, repo, rita, bob = world["forge"], world["repo"], world["rita"], world["bob"]
    issue = await forge.create_issue(repo, rita, title="Please", body="")
    await forge.set_labels(repo, issue.number, rita, ["dispatch:codex"])
    await bot.wait_for(lambda: _without(forge, repo, issue.number, "dispatch:codex"))
    await forge.set_labels(repo, issue.number, bob, [*forge.label_names(repo, issue.number), "bug"])
    await bot.settle()
    assert await runs(bot) == []
    await bot.engine.reporter.sync()  # anything still queued would be posted now
    replies = await bot_comments(world, issue.number)
    assert len(replies) == 1 and "only users with write access" in replies[0].body and "@rita" in replies[0].body


async def test_commands_are_keyed_by_comment_so_redeliver_does_nothing(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="Flaky", body="")
    await forge.create_comment(repo, issue.number, bob, "/dispatch claude:opus fix the flaky test\nwith care")
    await bot.settle()
    await forge.redeliver(forge.deliveries[-1].id)
    await bot.settle()
    [run] = await runs(bot)
    assert (run.agent, run.model, run.task) == ("claude", "opus", "fix the flaky test\nwith care")


async def test_unknown_agent_and_parse_errors_get_replies_that_say_what_works(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="x", body="")
    await forge.create_comment(repo, issue.number, bob, "/dispatch nosuchagent go\n/cancel now")
    await bot.settle()
    replies = await bot.wait_for(
        lambda: _at_least(bot_comments(world, issue.number), 2)
    )
    text = "\n".join(r.body for r in replies)
    assert "I don't know the agent `nosuchagent`" in text and "`codex`" in text and "`claude`" in text
    assert "/cancel takes no arguments" in text
    assert await runs(bot) == []


async def test_the_bots_own_comments_are_ignored(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="x", body="")
    await bot.settle()  # handling bob's event taught the bot its own login
    await forge.create_comment(repo, issue.number, world["bot"], "/dispatch codex I talk to myself")
    await bot.settle()
    assert await runs(bot) == []
    assert forge.deliveries[-1].status == 200  # the login is known by now: answered, not even stored


async def test_edited_comments_never_trigger(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="x", body="")
    comment = await forge.create_comment(repo, issue.number, bob, "thinking")
    await forge.edit_comment(comment, bob, "/dispatch codex now")
    await bot.settle()
    assert await runs(bot) == []


async def _at_least(coro, n):
    items = await coro
    return items if len(items) >= n else None


async def test_without_admin_the_bot_fails_closed_and_says_so_once(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    forge.set_permission(repo, "dispatchbot", "write")  # may not read others' permissions: 403
    issue = await forge.create_issue(repo, bob, title="x", body="")
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex go")
    await forge.create_comment(repo, issue.number, bob, "/dispatch claude go")
    await bot.settle()
    assert await runs(bot) == []
    await bot.wait_for(lambda: bot_comments(world, issue.number))
    await bot.engine.reporter.sync()
    [reply] = await bot_comments(world, issue.number)
    assert "needs admin access" in reply.body


async def test_status_refreshes_the_status_comment_or_says_there_is_none(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="x", body="")
    await forge.create_comment(repo, issue.number, bob, "/status")
    await bot.settle()
    [none] = await bot.wait_for(lambda: bot_comments(world, issue.number))
    assert "no run to report on" in none.body
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex go")
    await bot.settle()
    [run] = await runs(bot)
    [status] = await bot.wait_for(lambda: _status_comments(world, issue.number, run.id))
    assert "The bot is frozen" in status.body and "/status" not in status.body  # frozen: nothing starts
    await forge.create_comment(repo, issue.number, bob, "/status")
    await bot.settle()
    [status] = await bot.wait_for(lambda: _status_comments(world, issue.number, run.id, "@bob's `/status`"))
    assert "The bot is frozen" in status.body


async def test_status_on_a_finished_run_refreshes_its_comment_visibly(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="x", body="")
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex go\n/cancel")
    await bot.settle()
    [run] = await runs(bot)
    assert run.state == "cancelled"
    await bot.wait_for(lambda: _status_comments(world, issue.number, run.id, "🚫 cancelled"))
    await forge.create_comment(repo, issue.number, bob, "/status")
    await bot.settle()
    [status] = await bot.wait_for(lambda: _status_comments(world, issue.number, run.id, "@bob's `/status`"))
    assert "🚫 cancelled" in status.body


async def test_status_brings_back_a_status_comment_a_maintainer_deleted(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="x", body="")
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex go\n/cancel")
    await bot.settle()
    [run] = await runs(bot)
    [status] = await bot.wait_for(lambda: _status_comments(world, issue.number, run.id, "🚫 cancelled"))
    await forge.delete_comment(status, bob)
    await forge.create_comment(repo, issue.number, bob, "/status")
    await bot.settle()
    [again] = await bot.wait_for(lambda: _status_comments(world, issue.number, run.id, "@bob's `/status`"))
    assert again.id != status.id and "🚫 cancelled" in again.body


async def _status_comments(world, number, run_id, text=""):
    """The run's status comments, once one of them contains ``text``."""
    found = [c for c in await bot_comments(world, number) if f"dispatchbot:run:{run_id} " in c.body]
    return found if any(text in c.body for c in found) else None


async def _without(forge, repo, number, label):
    return label not in forge.label_names(repo, number)


async def test_trigger_labels_are_removed_as_they_arrived_and_a_later_label_edit_starts_nothing(world, make_bot):
    """A custom agent whose model fills in, a preset whose default model fills in, and an agent
    already at work: each label is removed as it arrived, so adding ``bug`` after the runs ended
    starts no new run."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await make_bot(frozen=True, agents={"mybot": {"argv": ["mybot", "{prompt}"], "model": "m1"}})
    issue = await forge.create_issue(repo, bob, title="Tidy up", body="")
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex go")
    await forge.set_labels(repo, issue.number, bob, ["dispatch:mybot", "dispatch:local", "dispatch:codex"])
    await bot.settle()
    got = sorted((r.agent, r.model) for r in await runs(bot))
    assert got == [("codex", ""), ("local", "devstral-24b"), ("mybot", "m1")]
    await bot.wait_for(lambda: _no_trigger_label(forge, repo, issue.number))
    await forge.create_comment(repo, issue.number, bob, "/cancel")
    await bot.settle()
    await bot.wait_for(lambda: _all_reported(bot))
    assert [r.state for r in await runs(bot)] == ["cancelled"] * 3
    await forge.set_labels(repo, issue.number, bob, [*forge.label_names(repo, issue.number), "bug"])
    await bot.settle()
    assert len(await runs(bot)) == 3


async def _no_trigger_label(forge, repo, number):
    return not [name for name in forge.label_names(repo, number) if name.startswith("dispatch:")]


async def _all_reported(bot):
    for run in await bot.store.runs():
        if (await bot.store.reported(run.id)).get("version") != run.version:
            return False
    return True
