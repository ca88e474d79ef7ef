"""The scheduler's cleanup jobs and the dry run, against real Docker, git and the fake Forge."""


import pytest

from bot.runs.dryrun import dry_run_issue
from bot.executor.docker import ContainerSpec
from bot.runs.containers import INSTANCE_LABEL, RUN_LABEL
from bot.settings import Limits
from bot.workspace import recent_commits

from .helpers import dispatch, ended

pytestmark = pytest.mark.docker


@pytest.fixture
async def bot(engine_bot):
    return await engine_bot()


async def test_reap_kills_containers_of_no_active_run_but_spares_live_ones(world, bot, agent_image):
    executor = bot.engine.executor
    spec = ContainerSpec(name="dispatchbot-orphan-test", image=agent_image, argv=["sleep", "300"], workdir="/",
                         mounts=[], env={}, labels={RUN_LABEL: "9999", "dispatchbot.role": "agent",
                                                     INSTANCE_LABEL: bot.settings.instance},
                         limits=Limits(memory="32m"))
    orphan = await executor.start(spec)
    await dispatch(world, "/dispatch codex wait scenario:hang")
    await bot.wait_for(lambda: bot.store.runs(states=["running"]))
    assert await bot.engine.scheduler.reap() == []  # younger than 30 s: never reaped
    assert await bot.engine.scheduler.reap(min_age=0) == [orphan]
    [run] = await bot.store.runs()
    assert run.state == "running" and [c.id for c in await bot.engine.runner.containers()] == [run.container_id]
    await bot.store.transition(run.id, "cancelled")
    await bot.wait_for(lambda: _none_left(bot))


async def test_sweep_marks_then_deletes_old_finished_workspaces_only(world, bot):
    bot.settings.sweep.completed = 0.0
    await dispatch(world, "/dispatch codex one scenario:no-change", title="one")
    [done] = await ended(bot)
    await bot.wait_for(lambda: _reported(bot, done.id))
    await dispatch(world, "/dispatch codex two scenario:hang", title="two")
    await bot.wait_for(lambda: bot.store.runs(states=["running"]))
    root = bot.settings.data_dir / "workspaces" / "acme" / "widgets"
    assert (root / "issue-1").is_dir() and (root / "issue-2").is_dir()
    assert await bot.engine.scheduler.sweep() == []  # first pass only marks
    assert (root / "issue-1" / ".meta" / ".swept").exists()
    assert await bot.engine.scheduler.sweep() == [str(root / "issue-1")]
    assert not (root / "issue-1").exists() and (root / "issue-2" / "repo").is_dir()
    # The swept run keeps its summary row; its history went with the workspace.
    assert await bot.store.history(done.id) == [] and (await bot.store.get(done.id)).state == "completed"
    for run in await bot.store.runs(states=["running"]):
        await bot.store.transition(run.id, "cancelled")


async def test_dry_run_returns_the_prompt_and_starts_nothing(world, bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="Fix the parser", body="It breaks on tabs.")
    argv, prompt = await dry_run_issue(bot.settings, "acme", "widgets", issue.number, "claude:opus", "")
    assert argv[:2] == ["claude", "-p"] and argv[2] == prompt and argv[-2:] == ["--model", "opus"]
    assert "Fix the parser" in prompt and "It breaks on tabs." in prompt
    assert await bot.store.runs() == []
    assert await bot.engine.runner.containers() == []


async def test_a_dry_run_leaves_the_workspace_of_a_running_run_alone(world, bot):
    issue = await dispatch(world, "/dispatch codex wait scenario:hang", title="Hang around")
    [run] = await bot.wait_for(lambda: bot.store.runs(states=["running"]))
    root = bot.settings.data_dir / "workspaces" / "acme" / "widgets"
    ws = root / run.workspace_key

    async def seen():
        files = sorted(str(p.relative_to(ws)) for p in ws.rglob("*") if ".git" not in p.parts)
        meta = {name: (ws / ".meta" / name).read_bytes() for name in ("prompt.md",)}
        return (ws / "repo" / ".git" / "HEAD").read_text(), await recent_commits(ws / "repo" / ".git"), files, meta

    before = await seen()
    assert run.branch in before[0]
    argv, prompt = await dry_run_issue(bot.settings, "acme", "widgets", issue.number, "claude", "rename everything")
    assert "rename everything" in prompt and argv[2] == prompt
    assert await seen() == before
    assert [p.name for p in root.iterdir()] == [run.workspace_key]  # the dry run's own workspace is gone
    assert [r.state for r in await bot.store.runs()] == ["running"]
    await bot.store.transition(run.id, "cancelled")
    await bot.wait_for(lambda: _none_left(bot))


async def _reported(bot, run_id):
    run = await bot.store.get(run_id)
    return (await bot.store.reported(run_id)).get("version") == run.version


async def _none_left(bot):
    return not await bot.engine.runner.containers()
