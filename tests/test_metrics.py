"""``GET /metrics`` scraped over real HTTP and read with prometheus_client's own parser."""

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .helpers import dispatch, ended

READ_TOKEN = "read-token-for-the-metrics"


async def scrape(bot, **kwargs) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels): value}."""
    async with aiohttp.ClientSession() as session:
        async with session.get(bot.url + "/metrics", **kwargs) as resp:
            assert resp.status == 200, await resp.text()
            assert resp.headers["Content-Type"].startswith("text/plain")
            text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples, name, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.docker
async def test_the_counters_move_as_a_run_happens(world, engine_bot):
    bot = await engine_bot()
    before = await scrape(bot)
    assert value(before, "dispatchbot_runs_started_total", agent="codex") == 0
    assert value(before, "dispatchbot_outbox_backlog") == 0

    await dispatch(world, "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot)
    assert run.state == "completed", run.reason
    after = await scrape(bot)

    assert value(after, "dispatchbot_deliveries_total", outcome="accepted") > value(
        before, "dispatchbot_deliveries_total", outcome="accepted"
    )
    assert value(after, "dispatchbot_runs_started_total", agent="codex") == 1
    assert value(after, "dispatchbot_runs_ended_total", agent="codex", outcome="completed") == 1
    assert value(after, "dispatchbot_run_duration_seconds_count", agent="codex") == 1
    duration = value(after, "dispatchbot_run_duration_seconds_sum", agent="codex")
    assert 0 < duration <= run.ended_at - run.started_at + 0.01
    assert value(after, "dispatchbot_webhook_to_running_seconds_count") == 1
    assert 0 < value(after, "dispatchbot_webhook_to_running_seconds_sum") < 60
    assert value(after, "dispatchbot_forge_calls_total", status="2xx") > value(
        before, "dispatchbot_forge_calls_total", status="2xx"
    )
    assert value(after, "dispatchbot_container_start_failures_total") == 0
    assert value(after, "dispatchbot_active_runs", pool="codex") == 0

    again = await scrape(bot)  # a transition is counted once, however often it is scraped
    assert value(again, "dispatchbot_runs_started_total", agent="codex") == 1
    assert value(again, "dispatchbot_run_duration_seconds_count", agent="codex") == 1


@pytest.mark.docker
async def test_a_blocked_then_answered_run_scraped_late_is_counted_as_it_happened(world, engine_bot):
    bot = await engine_bot()
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await dispatch(world, "/dispatch codex migrate scenario:answer")
    [run] = await ended(bot)
    assert run.state == "blocked"
    await forge.create_comment(repo, issue.number, bob, "/answer use the v2 API")

    async def completed():
        return (await bot.store.get(run.id)).state == "completed"

    await bot.wait_for(completed, timeout=60)
    samples = await scrape(bot)  # the first scrape sees both lives of the run at once
    assert value(samples, "dispatchbot_runs_started_total", agent="codex") == 2
    assert value(samples, "dispatchbot_runs_ended_total", agent="codex", outcome="blocked") == 1
    assert value(samples, "dispatchbot_runs_ended_total", agent="codex", outcome="completed") == 1
    assert value(samples, "dispatchbot_run_duration_seconds_count", agent="codex") == 2
    assert value(samples, "dispatchbot_webhook_to_running_seconds_count") == 1  # the answer is no new request


async def test_changes_after_a_compaction_reused_the_ids_are_counted(world, make_bot):
    bot = await make_bot(frozen=True)
    await dispatch(world, "/dispatch codex first", title="One")
    await bot.settle()
    [first] = await bot.store.runs()
    await bot.store.transition(first.id, "cancelled", reason="not needed")
    assert value(await scrape(bot), "dispatchbot_runs_ended_total", agent="codex", outcome="cancelled") == 1

    async def reported():
        run = await bot.store.get(first.id)
        return (await bot.store.reported(run.id)).get("version") == run.version

    await bot.wait_for(reported)
    assert await bot.store.compact("acme", "widgets", first.workspace_key) == 1  # the newest transitions go
    await dispatch(world, "/dispatch codex second", title="Two")
    await bot.settle()
    second = (await bot.store.runs())[-1]
    await bot.store.transition(second.id, "cancelled", reason="not needed either")
    assert [t.id for t in await bot.store.history(second.id)] == [1, 2]  # SQLite gave the ids out again
    assert value(await scrape(bot), "dispatchbot_runs_ended_total", agent="codex", outcome="cancelled") == 2


async def test_queue_depth_and_backlogs_are_read_from_the_store(world, make_bot):
    bot = await make_bot(frozen=True, pools={"claude": {"limit": 1}})
    for n in range(3):
        await dispatch(world, f"/dispatch claude task {n}", title=f"Issue {n}")
    await dispatch(world, "/dispatch gemini another", title="Gemini's")
    await bot.settle()
    samples = await scrape(bot)
    assert value(samples, "dispatchbot_queue_depth", pool="claude") == 3
    assert value(samples, "dispatchbot_queue_depth", pool="gemini") == 1
    assert value(samples, "dispatchbot_active_runs", pool="claude") == 0
    assert value(samples, "dispatchbot_deliveries_pending") == 0
    await bot.store.enqueue("k1", "comment", "acme", "widgets", 1, {"body": "x"})
    assert value(await scrape(bot), "dispatchbot_outbox_backlog") >= 1


async def test_the_replicas_and_their_runs_are_read_from_the_store(world, make_bot):
    bot = await make_bot(frozen=True)
    await dispatch(world, "/dispatch codex task", title="Issue")
    await bot.settle()
    await bot.store.heartbeat("bot-9", "host-9", 3)
    await bot.store.claim(max_running=4, pool_limits={}, spawn_intervals={}, replica="bot-9")
    await bot.store.heartbeat("bot-8", "host-8", 2, now=1.0)  # long silent
    samples = await scrape(bot)
    assert value(samples, "dispatchbot_replicas", state="alive") == 2
    assert value(samples, "dispatchbot_replicas", state="lost") == 1
    assert value(samples, "dispatchbot_replica_active_runs", replica="bot-9") == 1
    assert value(samples, "dispatchbot_replica_active_runs", replica=bot.services.replica) == 0
    assert value(samples, "dispatchbot_replica_max_running", replica="bot-9") == 3


async def test_refused_and_duplicate_deliveries_are_counted(world, make_bot):
    bot = await make_bot(frozen=True)
    async with aiohttp.ClientSession() as session:
        async with session.post(bot.url + "/webhook", data=b"{}", headers={"X-Gitea-Event": "issues"}) as resp:
            assert resp.status == 401
    forge = world["forge"]
    await forge.create_issue(world["repo"], world["bob"], title="x", body="")
    sent = forge.deliveries[-1]
    async with aiohttp.ClientSession() as session:  # the very same delivery again, as a retrying proxy would
        async with session.post(bot.url + "/webhook", data=sent.body, headers=sent.headers) as resp:
            assert resp.status == 200
    samples = await scrape(bot)
    assert value(samples, "dispatchbot_deliveries_total", outcome="refused") == 1
    assert value(samples, "dispatchbot_deliveries_total", outcome="accepted") == 1
    assert value(samples, "dispatchbot_deliveries_total", outcome="duplicate") == 1


@pytest.mark.docker
async def test_a_container_that_cannot_start_is_counted(world, engine_bot):
    bot = await engine_bot(limits={"cap_add": ["NOT_A_CAP"]})  # the engine refuses to create it
    await dispatch(world, "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot)
    assert run.state == "failed" and "unknown capability" in run.reason, run.reason
    samples = await scrape(bot)
    assert value(samples, "dispatchbot_container_start_failures_total") == 1
    assert value(samples, "dispatchbot_runs_started_total", agent="codex") == 0
    assert value(samples, "dispatchbot_runs_ended_total", agent="codex", outcome="failed") == 1


async def test_private_metrics_want_a_token(make_bot):
    bot = await make_bot(frozen=True, metrics_public=False, read_token=READ_TOKEN)
    async with aiohttp.ClientSession() as session:
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401)):
            async with session.get(bot.url + "/metrics", headers=headers) as resp:
                assert resp.status == status
    samples = await scrape(bot, headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert ("dispatchbot_outbox_backlog", ()) in samples


async def test_private_metrics_without_any_token_are_off(make_bot):
    bot = await make_bot(frozen=True, metrics_public=False)
    async with aiohttp.ClientSession() as session:
        async with session.get(bot.url + "/metrics") as resp:
            assert resp.status == 404


async def test_two_bots_in_one_process_keep_their_own_counters(world, make_bot):
    first = await make_bot(frozen=True)
    second = await make_bot(frozen=True)
    async with aiohttp.ClientSession() as session:
        async with session.post(first.url + "/webhook", data=b"{}") as resp:
            assert resp.status == 401
    assert value(await scrape(first), "dispatchbot_deliveries_total", outcome="refused") == 1
    assert value(await scrape(second), "dispatchbot_deliveries_total", outcome="refused") == 0
