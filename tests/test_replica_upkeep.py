"""The heartbeat and the lost-replica job over a real store (SQLite: what they decide is the same
on PostgreSQL, whose replicas are exercised end to end in test_replicas*.py)."""

import pytest

from bot.settings import Settings
from bot.store import RunRequest, open_store
from bot.upkeep.replicas import Heartbeat, reclaim_lost

from .helpers import wait_for

TTL = 0.6


async def test_a_replica_judges_others_lost_only_once_its_own_beats_went_through_for_a_whole_ttl(tmp_path):
    store = await open_store(tmp_path / "db.sqlite3")
    settings = Settings(data_dir=tmp_path, replica={"ttl": TTL, "heartbeat": 0.1})
    req = RunRequest(owner="acme", repo="widgets", number=1, is_pull=False, agent="codex", model="", pool="codex",
                     review=False, task="fix it", trigger="label", requested_by="bob")
    await store.request_run(req, trigger_key="label:1")
    await store.heartbeat("bot-2", "host-2", 2, now=1.0)  # silent for ages: lost, as far as anyone knows
    [run] = await store.claim(max_running=4, pool_limits={}, spawn_intervals={}, replica="bot-2")
    await store.transition(run.id, "running", container_id="c1", started_at=2.0)
    heartbeat = Heartbeat(settings, store, "bot-1")
    await heartbeat.start()
    try:
        # Just heard itself (as after the store came back, or the whole cluster started): not yet a judge.
        assert await reclaim_lost(store, heartbeat, TTL) == []
        assert (await store.get(run.id)).state == "running"
        [failed] = await wait_for(lambda: reclaim_lost(store, heartbeat, TTL), timeout=10)
        assert (failed.id, failed.state, failed.reason) == (run.id, "failed", "replica bot-2 was lost while the agent ran")
        assert {r.id: r.lost_at is not None for r in await store.replicas()} == {"bot-1": False, "bot-2": True}
    finally:
        await heartbeat.stop()
        await store.close()
    with pytest.raises(ValueError, match="no active connection"):
        await heartbeat.beat()  # the store is gone
    assert heartbeat.steady_since is None and not heartbeat.steady_for(0.0)


async def test_heartbeats_go_on_at_their_cadence(tmp_path):
    store = await open_store(tmp_path / "db.sqlite3")
    heartbeat = Heartbeat(Settings(data_dir=tmp_path, replica={"ttl": TTL, "heartbeat": 0.1}), store, "bot-1")
    await heartbeat.start()
    try:
        [first] = await store.replicas()
        await wait_for(lambda: _seen_after(store, first.seen_at), timeout=10)
    finally:
        await heartbeat.stop()
        await store.close()


async def _seen_after(store, at: float) -> bool:
    [replica] = await store.replicas()
    return replica.seen_at > at
