"""Usage and budgets with the real CLIs (issue #15): the agent image runs codex, claude, gemini and
opencode through the bot's model gateway against the scripted model (tests/test_real_agents.py's
bot), end to end through the fake Forge: each run's totals are what the model reported, a budget
in USD, tokens or calls stops the CLI at the call that reached it, and a spent daily budget queues
the next run until the UTC day is over (the clock moved, not waited for)."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from bot.report import sentences
from bot.runs.containers import RUN_LABEL
from bot.store import TERMINAL, ModelUsage, utc_day
from bot.usage import budgets, prices
from tests import test_real_agents
from tests.fakemodel import Append, Script, Tokens, hello

pytestmark = pytest.mark.docker

model, real_bot = test_real_agents.model, test_real_agents.real_bot  # the same fixtures
TURNS = (Tokens(1200, 80, 400, 30), Tokens(1500, 60, 1000, 0), Tokens(1800, 120, 1200, 50))
# Six edits: more turns than any budget below allows.
LONG_TASK = Script(steps=tuple(Append("NOTES.md", f"line {n}\n") for n in range(6)), final="Wrote NOTES.md",
                   tokens=(Tokens(1000, 100),))


async def ran(bot, forge, repo, bob, agent: str, title: str):
    """A labelled issue's run, once it ended and the Forge shows it."""
    issue = await forge.create_issue(repo, bob, title=title, body="Do it.")
    await forge.set_labels(repo, issue.number, bob, [f"dispatch:{agent}"])

    async def reported():
        [run] = [r for r in await bot.store.runs() if r.number == issue.number] or [None]
        if run is None or run.state not in TERMINAL:
            return None
        return run if (await bot.store.reported(run.id)).get("version") == run.version else None

    return await bot.wait_for(reported, timeout=120), issue


def summed(sent) -> tuple[int, int, int, int, int]:
    return (len(sent), sum(s.tokens.input for s in sent), sum(s.tokens.output for s in sent),
            sum(s.tokens.cached for s in sent), sum(s.tokens.reasoning for s in sent))


async def metered(bot, run_id: int, calls: int):
    """The run's usage once all its calls are written (they are written behind the answers)."""
    return await bot.wait_for(lambda: _with_calls(bot, run_id, calls), timeout=10)


async def _with_calls(bot, run_id, calls):
    usage = await bot.store.usage(run_id)
    return usage if usage.total.calls >= calls else None


def status_of(forge, repo, number) -> str:
    return "\n".join(c.body for c in forge.comments(repo, number) if c.poster.login == "dispatchbot")


async def test_each_real_clis_run_totals_what_the_model_reported(world, real_bot, model):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await real_bot()
    model.script = Script(steps=hello().steps, final="Created and edited HELLO.md", tokens=TURNS)
    for agent in ("codex", "claude", "gemini", "opencode"):
        before = len(model.sent)
        run, _ = await ran(bot, forge, repo, bob, agent, f"Say hello with {agent}")
        assert run.state == "completed", (agent, run.reason, run.result.log_tail)
        sent = model.sent[before:]
        usage = await metered(bot, run.id, len(sent))
        total = usage.total
        assert (total.calls, total.input_tokens, total.output_tokens, total.cached_tokens,
                total.reasoning_tokens) == summed(sent), agent
        assert {m.model for m in usage.by_model} == {s.model for s in sent}, agent
        assert total.cost_usd is None  # no prices configured: cost unknown, never made up
        assert 0 < total.wait_seconds < time.time() - run.started_at
        assert any("HELLO.md" in action for action in usage.actions), (agent, usage.actions)


async def test_a_budget_in_usd_tokens_or_calls_stops_a_real_cli_at_the_call_that_reached_it(world, real_bot, model):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await real_bot(
        default_models={"codex": "fake-coder", "claude": "claude-sonnet-4-5"},
        prices={"claude-sonnet-4-5": {"input": 1000.0, "output": 0.0, "cached": 0.0}},  # $1 a call
        budgets={"agents": {"codex": {"run_tokens": 2500}, "claude": {"run_usd": 2.5},
                            "gemini": {"run_calls": 2}}},
    )
    model.script = LONG_TASK
    price = bot.settings.prices["claude-sonnet-4-5"]
    stopped = {}
    for agent, cap, crossed in (
        ("codex", "budget of 2,500 tokens", lambda s: sum(t.tokens.input + t.tokens.output for t in s) >= 2500),
        ("claude", "budget of $2.50", lambda s: sum(prices.cost(price if t.model.startswith("claude-sonnet-4-5")
                                                                 else None, _usage(t)) or 0 for t in s) >= 2.5),
        ("gemini", "budget of 2 model calls", lambda s: len(s) >= 2),
    ):
        before = len(model.sent)
        run, issue = await ran(bot, forge, repo, bob, agent, f"Write notes with {agent}")
        sent = model.sent[before:]
        assert run.state == "failed" and run.reason.startswith(f"{cap} reached after {len(sent)} model calls"), (
            agent, run.reason, run.result.log_tail)
        assert crossed(sent) and not crossed(sent[:-1]), agent  # the last call answered reached it
        assert f"Reason: {run.reason}" in status_of(forge, repo, issue.number)
        usage = await metered(bot, run.id, len(sent))
        assert summed(sent)[:3] == (usage.total.calls, usage.total.input_tokens, usage.total.output_tokens)
        ws = bot.services.workspaces.directory(run.owner, run.repo, run.workspace_key)
        assert (ws.root / "repo" / "NOTES.md").exists(), agent  # its workspace is kept for /retry
        await bot.wait_for(lambda run_id=run.id: _stopped(bot, run_id), timeout=30)  # its container is stopped
        stopped[agent] = (run, issue, len(sent))
    run, issue, calls = stopped["codex"]  # /retry starts again, with a fresh budget
    before = len(model.sent)
    await forge.create_comment(repo, issue.number, bob, "/retry")
    again = await bot.wait_for(lambda: _retried(bot, run.id), timeout=120)
    assert again.reason.startswith(f"budget of 2,500 tokens reached after {calls} model calls")
    assert len(model.sent) - before == calls


async def _retried(bot, run_id: int):
    found = [r for r in await bot.store.runs() if r.retry_of == run_id and r.state in TERMINAL]
    return found[0] if found else None


async def _stopped(bot, run_id: int) -> bool:
    return not [c for c in await bot.engine.runner.containers() if c.labels.get(RUN_LABEL) == str(run_id) and c.running]


def _usage(sent) -> ModelUsage:
    return ModelUsage(sent.model, 1, sent.tokens.input, sent.tokens.output, sent.tokens.cached)


async def test_a_spent_daily_budget_queues_the_next_run_until_the_utc_day_is_over(world, real_bot, model):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await real_bot(prices={"fake-coder": {"input": 1000.0, "output": 0.0, "cached": 0.0}},  # $1 a call
                         budgets={"daily_usd": 1.5}, schedule={"drain": 0.5})
    model.script = replace(hello(), tokens=(Tokens(1000, 10),))
    first, _ = await ran(bot, forge, repo, bob, "codex", "Say hello")
    assert first.state == "completed", (first.reason, first.result.log_tail)
    assert await bot.store.spent(utc_day(bot.services.clock.now()), repo="acme/widgets") >= 1.5
    issue = await forge.create_issue(repo, bob, title="Say hello again", body="Again.")
    await forge.set_labels(repo, issue.number, bob, ["dispatch:codex"])
    said = await bot.wait_for(lambda: _said(forge, repo, issue.number, "spent its daily budget of $1.50"), timeout=30)
    assert "Repository `acme/widgets` spent its daily budget" in said and "resets at" in said
    assert f"resets at {sentences.format_time(budgets.next_day(time.time()))}" in said
    [second] = [r for r in await bot.store.runs() if r.number == issue.number]
    assert second.state == "queued"
    bot.services.clock.skew = budgets.next_day(time.time()) - time.time() + 1  # past midnight UTC
    started = await bot.wait_for(lambda: _state(bot, second.id, "completed"), timeout=120)
    assert started.attempts == 1


async def _said(forge, repo, number, text):
    body = status_of(forge, repo, number)
    return body if text in body else None


async def _state(bot, run_id, state):
    run = await bot.store.get(run_id)
    return run if run.state == state else None
