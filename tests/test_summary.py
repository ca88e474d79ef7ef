"""The run's summary: codex's ``-o`` final message, else the final stdout of CLIs that print it."""

import pytest

from bot.runs import final_message
from bot.runs.agents import resolve
from bot.settings import Settings
from bot.workspace import Workspace
from bot.workspace import layout

from .helpers import bot_comments, dispatch, ended, reported


def test_codex_and_local_write_their_final_message_where_the_summary_is_read():
    s = Settings(_env_file=None)
    for spec in ("codex", "codex:o3", "local"):
        argv = resolve(s, spec).argv("task")
        assert argv[argv.index("-o") + 1] == f"../.meta/{layout.LAST_MESSAGE}"


def test_the_summary_is_bounded_and_prefers_the_written_message(tmp_path):
    ws = Workspace("acme", "widgets", "issue-1", tmp_path, "b", "main", "http://forge.invalid/acme/widgets.git")
    ws.meta.mkdir()
    s = Settings(_env_file=None)
    codex, claude = resolve(s, "codex"), resolve(s, "claude")
    (ws.meta / layout.STDOUT_LOG).write_text("progress\n" + "x" * 5000 + "\nthe end\n")
    assert final_message.read(ws, codex, 1 << 20) == ""  # codex's stdout is not its summary
    printed = final_message.read(ws, claude, 1 << 20)
    assert len(printed) == final_message.MAX_CHARS + 1 and printed.startswith("…x") and printed.endswith("x\nthe end")
    (ws.meta / layout.LAST_MESSAGE).write_text("Fixed it.\n" + "y" * 5000)
    written = final_message.read(ws, claude, 1 << 20)
    assert len(written) == final_message.MAX_CHARS + 1 and written.startswith("Fixed it.\nyy") and written.endswith("y…")
    final_message.clear(ws)
    assert not (ws.meta / layout.LAST_MESSAGE).exists()



@pytest.mark.docker
async def test_codex_final_message_is_the_summary_in_the_pull_request_and_the_status_comment(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed", run.reason
    meta = bot.settings.data_dir / "workspaces/acme/widgets/issue-1/.meta"
    final = (meta / layout.LAST_MESSAGE).read_text().strip()
    assert final.startswith("Done: record agent notes (committed ") and "argv:" not in final
    assert run.result.summary == final
    quoted = f"**The agent's summary**\n\n> {final}"
    [pull] = forge.pulls(repo)
    assert quoted in pull.issue.body
    [comment] = bot_comments(world, issue.number)
    assert quoted in comment.body


@pytest.mark.docker
async def test_claude_final_stdout_is_the_summary(world, engine_bot):
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch claude look around scenario:no-change")
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.result.summary == "Looked around; nothing needs to change."
    [comment] = bot_comments(world, issue.number)
    assert "> Looked around; nothing needs to change." in comment.body


@pytest.mark.docker
async def test_a_final_message_of_an_earlier_run_is_not_reused(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot()
    issue = await dispatch(world, "/dispatch codex look scenario:no-change")
    [first] = await ended(bot)
    assert first.result.summary == "Looked around; nothing needs to change."
    await forge.create_comment(repo, issue.number, bob, "/dispatch codex break scenario:fail")
    runs = await ended(bot, count=2)
    second = await reported(bot, runs[-1].id)
    assert second.state == "failed" and second.result.summary == ""
    second_comment = [c for c in bot_comments(world, issue.number) if f"run {second.id} " in c.body]
    assert second_comment and "The agent's summary" not in second_comment[0].body
