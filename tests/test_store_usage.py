"""What runs' model calls used, on both store backends (a real SQLite file and a real PostgreSQL
server): sums per run, model and UTC day, the last actions, totals, what a day cost, and daily
budgets decided inside the claim."""

import asyncio
import calendar

import pytest

from bot.store import ModelUsage, open_store, utc_day
from bot.store.model import MAX_ACTIONS
from bot.store.policy import Daily
from tests import test_store
from tests.test_store import LIMITS, request

location, store = test_store.location, test_store.store  # the same fixtures: both backends

DAY = "2026-12-06"
NOON = calendar.timegm((2026, 12, 6, 12, 0, 0))


def call(model="gpt-5", *, cost=0.01, inp=1000, out=200, cached=300, reasoning=50, wait=0.5):
    return ModelUsage(model, 1, inp, out, cached, reasoning, cost, wait)


async def test_usage_adds_up_per_model_and_keeps_the_last_actions(store):
    run = await store.request_run(request(), trigger_key="k")
    await store.add_usage(run.id, call(), day=DAY, at=NOON, actions=["ran `ls`"])
    await store.add_usage(run.id, call(cost=0.02), day=DAY, at=NOON + 1,
                          actions=[f"edited f{n}.py" for n in range(MAX_ACTIONS)])
    await store.add_usage(run.id, call("claude-haiku-4-5", cost=None), day="2026-12-07", at=NOON + 86400)
    usage = await store.usage(run.id)
    assert [m.model for m in usage.by_model] == ["claude-haiku-4-5", "gpt-5"]
    haiku, gpt = usage.by_model
    assert gpt == ModelUsage("gpt-5", 2, 2000, 400, 600, 100, pytest.approx(0.03), 1.0)
    assert haiku.cost_usd is None and haiku.calls == 1  # no price: cost unknown, never a guess
    assert usage.total.calls == 3 and usage.total.input_tokens == 3000 and usage.total.cost_usd is None
    assert usage.actions == tuple(f"edited f{n}.py" for n in range(MAX_ACTIONS))  # oldest dropped
    other = await store.request_run(request(2), trigger_key="k2")
    assert (await store.usage(other.id)).by_model == ()
    both = await store.usages([run.id, other.id])
    assert set(both) == {run.id} and both[run.id] == usage


async def test_what_a_day_cost_per_repository_and_pool(store):
    a = await store.request_run(request(1, pool="fast"), trigger_key="a")
    b = await store.request_run(request(2, repo="gadgets", pool="fast"), trigger_key="b")
    c = await store.request_run(request(3, pool="slow"), trigger_key="c")
    await store.add_usage(a.id, call(cost=1.5), day=DAY, at=NOON)
    await store.add_usage(b.id, call(cost=0.25), day=DAY, at=NOON)
    await store.add_usage(c.id, call(cost=2.0), day=DAY, at=NOON)
    await store.add_usage(c.id, call(cost=None), day=DAY, at=NOON)  # counts nothing
    await store.add_usage(a.id, call(cost=9.0), day="2026-12-05", at=NOON - 86400)
    assert await store.spent(DAY) == pytest.approx(3.75)
    assert await store.spent(DAY, repo="acme/widgets") == pytest.approx(3.5)
    assert await store.spent(DAY, pool="fast") == pytest.approx(1.75)
    assert await store.spent(DAY, repo="acme/widgets", pool="slow") == pytest.approx(2.0)
    assert await store.spent("2026-12-01") == 0.0


async def test_totals_per_repository_and_agent_since_a_time(store):
    a = await store.request_run(request(1), trigger_key="a")
    b = await store.request_run(request(2, agent="claude"), trigger_key="b")
    c = await store.request_run(request(3), trigger_key="c")
    old = await store.request_run(request(4), trigger_key="d")
    for run in (a, c):
        await store.add_usage(run.id, call(cost=0.5), day=DAY, at=NOON)
    await store.add_usage(b.id, call("claude-sonnet-4-5", cost=1.0), day=DAY, at=NOON)
    await store.add_usage(old.id, call(cost=7.0), day="2026-11-01", at=NOON - 35 * 86400)
    totals = await store.usage_totals(since=NOON - 7 * 86400)
    assert [(t.repo, t.agent, t.runs) for t in totals] == [("acme/widgets", "claude", 1), ("acme/widgets", "codex", 2)]
    codex = totals[1].usage.total
    assert codex.calls == 2 and codex.cost_usd == pytest.approx(1.0) and codex.output_tokens == 400


async def test_an_addition_wakes_the_usage_subscribers(store):
    run = await store.request_run(request(), trigger_key="k")
    subscription = store.subscribe("usage")
    await store.add_usage(run.id, call(), day=DAY, at=NOON, actions=["read README.md"])
    assert await subscription.wait(5) == {"usage"}


async def test_usage_written_on_one_replica_wakes_another(postgres_url):
    one, other = await open_store(postgres_url), await open_store(postgres_url)
    try:
        run = await one.request_run(request(), trigger_key="k")
        subscription = other.subscribe("usage")
        await one.add_usage(run.id, call(), day=DAY, at=NOON)
        assert await subscription.wait(10) == {"usage"}
        assert (await other.usage(run.id)).total.calls == 1
    finally:
        await one.close()
        await other.close()


async def test_a_spent_daily_budget_keeps_new_runs_queued_until_the_next_utc_day(store):
    spender = await store.request_run(request(1, pool="fast"), trigger_key="a")
    [claimed] = await store.claim(**LIMITS, daily=Daily(repo_usd=2.0), now=NOON)
    assert claimed.id == spender.id
    await store.add_usage(spender.id, call(cost=2.04), day=utc_day(NOON), at=NOON)
    await store.transition(spender.id, "failed", reason="budget")
    waiting = await store.request_run(request(2, pool="fast"), trigger_key="b")
    elsewhere = await store.request_run(request(3, repo="gadgets", pool="fast"), trigger_key="c")
    claimed = await store.claim(**LIMITS, daily=Daily(repo_usd=2.0), now=NOON + 60)
    assert [r.id for r in claimed] == [elsewhere.id]  # another repository's runs still start
    assert await store.claim(**LIMITS, daily=Daily(repo_usd=2.0), now=NOON + 3600) == []
    assert [r.id for r in await store.claim(**LIMITS, daily=Daily(repo_usd=2.0), now=NOON + 43200)] == [waiting.id]


async def test_a_pools_daily_budget_holds_only_that_pool_and_raising_it_frees_it(store):
    spender = await store.request_run(request(1, pool="fast"), trigger_key="a")
    await store.add_usage(spender.id, call(cost=5.0), day=DAY, at=NOON)
    await store.transition(spender.id, "cancelled")
    held = await store.request_run(request(2, pool="fast"), trigger_key="b")
    free = await store.request_run(request(3, pool="slow"), trigger_key="c")
    daily = Daily(pool_usd={"fast": 5.0})
    assert [r.id for r in await store.claim(**LIMITS, daily=daily, now=NOON)] == [free.id]
    assert [r.id for r in await store.claim(**LIMITS, daily=Daily(pool_usd={"fast": 6.0}), now=NOON)] == [held.id]


async def test_replicas_claiming_at_once_under_a_spent_budget_start_nothing(store):
    spender = await store.request_run(request(1), trigger_key="a")
    await store.add_usage(spender.id, call(cost=3.0), day=DAY, at=NOON)
    await store.transition(spender.id, "cancelled")
    for n in range(2, 8):
        await store.request_run(request(n), trigger_key=f"k{n}")
    claims = await asyncio.gather(*(store.claim(**LIMITS, daily=Daily(repo_usd=3.0), now=NOON, replica=f"r{i}")
                                    for i in range(5)))
    assert [c for c in claims if c] == []


async def test_usage_stays_with_the_summary_row_through_compaction_and_pruning(store):
    run = await store.request_run(request(), trigger_key="k")
    await store.add_usage(run.id, call(), day=DAY, at=NOON, actions=["ran `make`"])
    await store.transition(run.id, "cancelled")
    await store.set_reported(run.id, "version", (await store.get(run.id)).version)
    assert await store.compact("acme", "widgets", "issue-1") == 1
    await store.prune(bodies=0, deliveries=0, now=NOON + 365 * 86400)
    usage = await store.usage(run.id)
    assert usage.total.calls == 1 and usage.actions == ("ran `make`",)
    assert await store.usages([]) == {}
