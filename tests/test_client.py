"""The operator commands of the console script, run as a subprocess against a running bot."""

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from tests.harness import free_port

TOKEN = "admin-token-for-tests-0123456789"
ROOT = Path(__file__).resolve().parents[1]


async def cli(bot_url, *args, token=TOKEN):
    """``python -m bot.cli ARGS`` with the API's URL and token in the environment; (code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHBOT_")}
    env |= {"DISPATCHBOT_CONFIG": "/nonexistent", "DISPATCHBOT_API_URL": bot_url, "DISPATCHBOT_ADMIN_TOKEN": token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def bot(make_bot, world):
    bot = await make_bot(admin_token=TOKEN, frozen=True)
    await world["forge"].create_issue(world["repo"], world["bob"], title="Tidy the widgets")
    return bot


async def test_dispatch_runs_show_cancel_retry_as_tables_and_json(bot):
    code, out, err = await cli(bot.url, "dispatch", "--repo", "acme/widgets", "--issue", "1", "--agent", "gemini",
                               "--task", "tidy up", "--plan-template", "bugfix", "--var", "symptom=crash")
    assert code == 0 and "queued run 1" in out, err
    assert (await bot.store.get(1)).options == {"plan_template": "bugfix", "variables": {"symptom": "crash"}}
    code, out, _ = await cli(bot.url, "runs")
    header, row = out.splitlines()
    assert header.split() == ["ID", "STATE", "AGENT", "REPO", "NUMBER", "REQUESTED_BY", "CREATED_AT", "TASK"]
    assert row.split()[:6] == ["1", "queued", "gemini", "acme/widgets", "1", "api"]
    code, out, _ = await cli(bot.url, "runs", "--json", "--state", "live")
    assert code == 0 and [r["id"] for r in json.loads(out)] == [1]
    code, out, _ = await cli(bot.url, "show", "1")
    assert code == 0 and "transitions:\n  - -> queued  api" in out and "issue: " in out
    code, out, _ = await cli(bot.url, "cancel", "1")
    assert code == 0 and "cancelled" in out
    code, _, err = await cli(bot.url, "cancel", "1")
    assert code == 1 and "only queued, working or blocked runs can be cancelled" in err
    code, out, _ = await cli(bot.url, "retry", "1", "--json")
    assert code == 0 and json.loads(out)["id"] == 2
    code, _, err = await cli(bot.url, "answer", "2", "yes")
    assert code == 1 and "only a blocked run can be answered" in err
    code, out, _ = await cli(bot.url, "logs", "2")
    assert code == 0 and out == "\n"


async def test_pools_freeze_thaw_poke(bot):
    code, out, _ = await cli(bot.url, "freeze", "codex")
    assert code == 0 and out.splitlines()[0].startswith("bot: FROZEN")
    assert out.splitlines()[2].split() == ["codex", "4", "0", "0", "True", "-"]
    code, out, _ = await cli(bot.url, "thaw")
    assert code == 0 and out.startswith("bot: running")
    code, out, _ = await cli(bot.url, "pools", "--json")
    assert json.loads(out)["pools"][0]["frozen"] is True
    assert (await cli(bot.url, "thaw", "codex"))[0] == 0 and (await bot.store.pool("codex")).frozen is False
    code, out, _ = await cli(bot.url, "poke")
    assert code == 0 and out.strip() == "(none)"


async def test_dry_run_prints_the_prompt_and_starts_nothing(bot):
    code, out, err = await cli(bot.url, "dispatch", "--repo", "acme/widgets", "--issue", "1", "--agent", "claude",
                               "--task", "check the parser", "--template", "verify", "--persona", "maintainer",
                               "--dry-run")
    assert code == 0, err
    argv, prompt = out.split("\n\n", 1)
    assert json.loads(argv.removeprefix("argv: "))[0] == "claude"
    assert "## TASK\n\n> check the parser" in prompt and "You are a careful verifier" in prompt
    assert "You act as a long-time maintainer" in prompt
    assert await bot.store.runs() == []
    assert list((bot.settings.data_dir / "workspaces/acme/widgets").iterdir()) == []  # no workspace left or used


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["dispatch", "--repo", "acme/widgets", "--issue", "1", "--agent", "nope"], 2, "unknown agent 'nope'"),
        (["dispatch", "--repo", "acme/widgets", "--issue", "1", "--var", "novalue"], 2, "is not KEY=VALUE"),
        (["dispatch", "--repo", "acme/widgets"], 2, "one of the arguments --issue --pr --branch --tag is required"),
        (["show", "42"], 1, "no run 42"),
        (["show", "x"], 2, "invalid int value"),
    ],
)
async def test_exit_codes_for_bad_input_and_refusals(bot, args, code, message):
    got, _, err = await cli(bot.url, *args)
    assert got == code and message in err, err


async def test_a_wrong_token_or_no_bot_exits_3(bot):
    code, _, err = await cli(bot.url, "runs", token="wrong")
    assert code == 3 and "a valid admin token is required" in err
    code, _, err = await cli(f"http://127.0.0.1:{free_port()}", "runs")
    assert code == 3 and "cannot reach the bot" in err


@pytest.mark.docker
async def test_logs_follow_a_real_run_to_its_end(world, engine_bot):
    bot = await engine_bot(admin_token=TOKEN)
    await world["forge"].create_issue(world["repo"], world["bob"], title="Notes")
    code, out, err = await cli(bot.url, "dispatch", "--repo", "acme/widgets", "--issue", "1",
                               "--task", "slow notes scenario:slow-ok:2")
    assert code == 0, err
    code, out, err = await cli(bot.url, "logs", "1", "-f")
    assert code == 0, err
    assert "scenario: slow-ok" in out and "Done: record agent notes after a slow start" in out
    assert out.rstrip().endswith("[run 1 completed]")
