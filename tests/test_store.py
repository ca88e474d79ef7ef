"""The store on both backends, a real SQLite file and a real PostgreSQL server: atomic claims, the
state machine, dedup, pools, retention. What only one backend has (SQLite's file and its
migrations) is tested on that one."""

import asyncio
import os
import sqlite3
import time
from contextlib import closing

import pytest

import asyncpg

from bot.store import PoolState, RunRequest, RunResult, SqliteStore, is_postgres, open_store
from bot.store.leases import cluster_turn, exclusive
from bot.store.policy import Limits, LiveRun, claimable
from bot.store.sqlite.schema import MIGRATIONS


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """Where a store is: a SQLite file, or a fresh database on the tests' PostgreSQL server."""
    if request.param == "sqlite":
        return tmp_path / "db.sqlite3"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
async def store(location):
    s = await open_store(location)
    yield s
    await s.close()


def request(number=1, agent="codex", pool=None, owner="acme", repo="widgets", **kw):
    return RunRequest(
        owner=owner, repo=repo, number=number, is_pull=False, agent=agent, model="", pool=pool or agent,
        review=False, task="fix it", trigger="comment", requested_by="bob", **kw,
    )


LIMITS = dict(max_running=10, pool_limits={"codex": 3}, spawn_intervals={})


async def test_twenty_simultaneous_requests_against_limit_three_start_exactly_three(store):
    runs = await asyncio.gather(*(store.request_run(request(n), trigger_key=f"k{n}") for n in range(20)))
    claims = await asyncio.gather(*(store.claim(**LIMITS) for _ in range(20)))
    claimed = [r.id for c in claims for r in c]
    assert len(claimed) == 3
    assert sorted(claimed) == sorted(r.id for r in runs)[:3]  # FIFO
    assert len(await store.runs(states=["preparing"])) == 3
    assert len(await store.runs(states=["queued"])) == 17


async def test_the_same_trigger_never_queues_twice(store):
    first = await store.request_run(request(), trigger_key="comment:12:512:0")
    again = await store.request_run(request(), trigger_key="comment:12:512:0")
    assert first is not None and again is None
    assert len(await store.runs()) == 1


async def test_a_cancel_acts_once_per_trigger_so_a_replay_cancels_nothing(store):
    first = await store.request_run(request(), trigger_key="label:1")
    [cancelled] = await store.cancel([first.id], reason="by /cancel", trigger_key="cancel:comment:40")
    assert cancelled.state == "cancelled" and cancelled.reason == "by /cancel"
    later = await store.request_run(request(), trigger_key="label:2")
    assert await store.cancel([later.id], reason="by /cancel", trigger_key="cancel:comment:40") is None
    assert (await store.get(later.id)).state == "queued"


async def test_label_requests_wait_for_the_live_one_to_end(store):
    run = await store.request_run(request(), trigger_key="label:a", unless_active=True)
    assert await store.request_run(request(), trigger_key="label:b", unless_active=True) is None
    assert await store.request_run(request(agent="claude"), trigger_key="label:c", unless_active=True)
    await store.transition(run.id, "cancelled")
    assert await store.request_run(request(), trigger_key="label:d", unless_active=True)


async def test_transitions_follow_the_state_machine_and_end_once(store):
    run = await store.request_run(request(), trigger_key="k")
    assert await store.transition(run.id, "completed") is None  # queued → completed is not a transition
    [claimed] = await store.claim(**LIMITS)
    running = await store.transition(claimed.id, "running", container_id="c1")
    assert running.state == "running" and running.container_id == "c1"
    ends = await asyncio.gather(
        store.transition(run.id, "completed", expect=("running",)),
        store.transition(run.id, "cancelled"),
        store.transition(run.id, "failed", expect=("running",)),
    )
    assert sum(e is not None for e in ends) == 1
    states = [c.to_state for c in await store.history(run.id)]
    assert states[:3] == ["queued", "preparing", "running"] and len(states) == 4


async def test_two_repos_with_the_same_issue_number_run_side_by_side_but_one_workspace_never_twice(store):
    a = await store.request_run(request(1, owner="acme"), trigger_key="a")
    b = await store.request_run(request(1, owner="other"), trigger_key="b")
    c = await store.request_run(request(1, owner="acme", agent="claude"), trigger_key="c")
    claimed = await store.claim(max_running=10, pool_limits={}, spawn_intervals={})
    assert {r.id for r in claimed} == {a.id, b.id}  # c shares a's workspace and waits
    await store.transition(a.id, "failed")
    assert [r.id for r in await store.claim(max_running=10, pool_limits={}, spawn_intervals={})] == [c.id]


async def test_issues_asking_the_same_task_get_their_own_branch_and_keep_it(store):
    choices = ("agent/fix-it", "agent/fix-it-issue-{}")
    first, second, other_repo = [
        await store.request_run(request(n, repo=repo), trigger_key=f"k{n}{repo}")
        for n, repo in ((1, "widgets"), (2, "widgets"), (2, "gadgets"))
    ]
    assigned = await asyncio.gather(*(
        store.assign_branch(r.id, (choices[0], choices[1].format(r.number))) for r in (first, second, other_repo)
    ))
    assert sorted(r.branch for r in assigned[:2]) == ["agent/fix-it", "agent/fix-it-issue-2"]
    assert assigned[2].branch == "agent/fix-it"  # another repo's branches are its own
    # A later run of the issue that has agent/fix-it continues on it.
    owner = next(r for r in assigned[:2] if r.branch == "agent/fix-it")
    again = await store.request_run(request(owner.number), trigger_key="again")
    assert (await store.assign_branch(again.id, (choices[0], choices[1].format(owner.number)))).branch == "agent/fix-it"


async def test_frozen_keeps_requests_queued_and_unfreezing_starts_them(store):
    await store.set_flag("frozen", "1")
    run = await store.request_run(request(), trigger_key="k")
    assert await store.claim(**LIMITS) == []
    assert (await store.get(run.id)).state == "queued"
    await store.set_flag("frozen", "0")
    assert [r.id for r in await store.claim(**LIMITS, frozen=True)] == [run.id]  # run-time switch wins


async def test_a_frozen_pool_does_not_hold_up_others(store):
    await store.request_run(request(1, agent="codex"), trigger_key="a")
    other = await store.request_run(request(2, agent="claude"), trigger_key="b")
    claimed = await store.claim(**LIMITS, frozen_pools=frozenset({"codex"}))
    assert [r.id for r in claimed] == [other.id]


async def test_spawn_interval_delays_only_its_own_pool(store):
    for n in range(3):
        await store.request_run(request(n, agent="codex"), trigger_key=f"c{n}")
    await store.request_run(request(9, agent="claude"), trigger_key="cl")
    spacing = {"codex": 60.0}
    now = time.time()
    first = await store.claim(max_running=10, pool_limits={}, spawn_intervals=spacing, now=now)
    assert sorted(r.pool for r in first) == ["claude", "codex"]
    assert await store.claim(max_running=10, pool_limits={}, spawn_intervals=spacing, now=now + 1) == []
    later = await store.claim(max_running=10, pool_limits={}, spawn_intervals=spacing, now=now + 61)
    assert [r.pool for r in later] == ["codex"]


async def test_quick_failures_pause_the_pool_and_a_success_resets(store):
    args = dict(threshold=3, pause=1800.0)
    assert await store.record_outcome("codex", quick_failure=True, **args) == 0
    assert await store.record_outcome("codex", quick_failure=True, **args) == 0
    assert await store.record_outcome("codex", quick_failure=False, **args) == 0  # reset
    for _ in range(2):
        assert await store.record_outcome("codex", quick_failure=True, **args) == 0
    until = await store.record_outcome("codex", quick_failure=True, **args)
    assert until > time.time() + 1700
    await store.request_run(request(), trigger_key="k")
    assert await store.claim(**LIMITS) == []
    assert (await store.pool("codex")).paused_until == until


async def test_state_survives_reopening_the_store(location):
    s = await open_store(location)
    assert await s.record_delivery("d1", "issues", b"{}")
    run = await s.request_run(request(), trigger_key="k")
    await s.record_outcome("codex", quick_failure=True, threshold=1, pause=100.0)
    await s.close()
    s = await open_store(location)
    try:
        assert not await s.record_delivery("d1", "issues", b"{}")
        assert [d[0] for d in await s.pending_deliveries()] == ["d1"]
        assert (await s.get(run.id)).state == "queued"
        assert (await s.pool("codex")).paused_until > time.time()
    finally:
        await s.close()


async def test_a_write_cancelled_at_any_step_leaves_the_store_writable_and_what_followed_kept(location):
    """A caller cancelled mid-write (a stop, a timeout) must not leave the connection inside its
    transaction: every later write would fail, or sit uncommitted until the file is closed."""
    s = await open_store(location)
    try:
        run = await s.request_run(request(), trigger_key="k")
        for steps in range(12):
            cut = asyncio.create_task(s.set_reported(run.id, "cut", steps))
            for _ in range(steps):
                await asyncio.sleep(0)
            cut.cancel()
            await asyncio.gather(cut, return_exceptions=True)
            await s.set_reported(run.id, "after", steps)
    finally:
        await s.close()
    s = await open_store(location)
    try:
        assert (await s.reported(run.id))["after"] == 11
    finally:
        await s.close()


async def test_outbox_items_are_queued_once_per_key(store):
    assert await store.enqueue("reply:x", "comment", "acme", "widgets", 1, {"body": "hi"})
    assert not await store.enqueue("reply:x", "comment", "acme", "widgets", 1, {"body": "hi again"})
    [item] = await store.due_outbox()
    await store.outbox_done(item.id, "503", retry_at=time.time() + 60)
    assert await store.due_outbox() == []
    [item] = await store.due_outbox(now=time.time() + 61)
    assert item.attempts == 1 and item.payload == {"body": "hi"}


async def test_one_issues_backlog_never_delays_another_issues_items(store):
    for n in range(500):  # a flood on issue 1, queued first
        await store.enqueue(f"reply:flood:{n}", "comment", "acme", "widgets", 1, {"body": f"{n}"})
    await store.enqueue("reply:other", "comment", "acme", "widgets", 2, {"body": "for issue 2"})
    await store.enqueue("reply:elsewhere", "comment", "acme", "gadgets", 1, {"body": "for gadgets#1"})
    due = await store.due_outbox()
    assert {(i.repo, i.number) for i in due} == {("widgets", 1), ("widgets", 2), ("gadgets", 1)}
    flood = [i for i in due if (i.repo, i.number) == ("widgets", 1)]
    assert [i.payload["body"] for i in flood] == [str(n) for n in range(len(flood))]  # in order, the oldest first


async def test_deliveries_arriving_together_are_committed_once_each(store):
    ids = [f"d{n % 20}" for n in range(60)]  # every id three times, in one burst
    fresh = await asyncio.gather(*(store.record_delivery(i, "issues", b"{}") for i in ids))
    assert sum(fresh) == 20
    assert sorted({i for i, new in zip(ids, fresh, strict=True) if new}) == sorted(set(ids))
    assert len(await store.pending_deliveries()) == 20
    assert not await store.record_delivery("d0", "issues", b"{}")
    # A burst mixing redeliveries of stored ids with new ones: only the new ones are fresh.
    mixed = ["d3", "e1", "d7", "e2", "e1"]
    assert await asyncio.gather(*(store.record_delivery(i, "issues", b"{}") for i in mixed)) == [
        False, True, False, True, False
    ]
    await asyncio.gather(store.finish_delivery("d0"), store.finish_delivery("d1", "Forge down"))
    pending = [d[0] for d in await store.pending_deliveries()]
    assert "d0" not in pending and "d1" in pending and len(pending) == 21


async def test_a_committed_change_wakes_the_subscribers_of_its_tables_only(store):
    runs, outbox = store.subscribe("runs", "pools"), store.subscribe("outbox")
    run = await store.request_run(request(), trigger_key="k")
    await store.set_pool_frozen("codex", True)
    assert await runs.wait(1.0) == {"runs", "pools"}  # both kept while nobody waited: one wake-up
    assert await outbox.wait(0.01) == set()
    assert await store.transition(run.id, "completed") is None  # refused: nothing changed, nobody woken
    await store.claim(**LIMITS, frozen_pools=frozenset({"codex"}))  # claims nothing
    assert await runs.wait(0.01) == set()
    waiting = asyncio.create_task(runs.wait(10.0))
    await store.transition(run.id, "cancelled")
    assert await asyncio.wait_for(waiting, 1.0) == {"runs"}
    await store.enqueue("reply:1", "comment", "acme", "widgets", 1, {"body": "hi"})
    assert await outbox.wait(1.0) == {"outbox"} and await runs.wait(0.01) == set()


async def test_recorded_and_handled_deliveries_wake_their_subscribers(store):
    deliveries = store.subscribe("deliveries")
    assert await store.record_delivery("d1", "issue_comment", b"{}")
    assert await deliveries.wait(1.0) == {"deliveries"}
    assert not await store.record_delivery("d1", "issue_comment", b"{}")  # a redelivery changes nothing
    assert await deliveries.wait(0.01) == set()
    await store.finish_delivery("d1")
    assert await deliveries.wait(1.0) == {"deliveries"}


def test_the_claim_policy_is_a_pure_decision_over_plain_rows():
    def live(id, state="queued", pool="codex", key=None):
        return LiveRun(id, state, pool, "acme", "widgets", key or f"issue-{id}", 0)

    rows = [live(1, "running"), live(2, key="issue-1"), live(3), live(4, pool="claude"), live(5)]
    paused = {"claude": PoolState("claude", None, paused_until=200.0, quick_failures=0, last_spawn_at=0.0)}
    chosen = claimable(rows, paused, Limits(max_running=3, pool_limits={"codex": 2}, spawn_intervals={}), now=100.0)
    assert [r.id for r in chosen] == [3]  # 2 shares the running workspace, 4's pool is paused, 5 is over codex's 2
    later = claimable(rows, paused, Limits(max_running=3, pool_limits={"codex": 2}, spawn_intervals={}), now=300.0)
    assert [r.id for r in later] == [3, 4]
    held = claimable(rows, paused, Limits(max_running=3, pool_limits={"codex": 2}, spawn_intervals={}), now=300.0,
                     held={("acme", "widgets", "issue-3")})
    assert [r.id for r in held] == [4, 5]  # a container still mounts 3's workspace


async def body_length(location, delivery_id):
    """The stored body's length, read past the store."""
    if is_postgres(location):
        db = await asyncpg.connect(location)
        try:
            return await db.fetchval("SELECT length(body) FROM deliveries WHERE id = $1", delivery_id)
        finally:
            await db.close()
    with closing(sqlite3.connect(location)) as db:
        row = db.execute("SELECT length(body) FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    return row and row[0]


async def test_pruning_drops_handled_bodies_but_a_redelivery_is_still_already_received(store, location):
    for delivery_id in ("handled", "failing"):
        assert await store.record_delivery(delivery_id, "issues", b"x" * 1000)
    await asyncio.gather(store.finish_delivery("handled"), store.finish_delivery("failing", "503"))
    hours_later = time.time() + 2 * 3600
    pruned = await store.prune(bodies=3600, deliveries=30 * 86400, now=hours_later)
    assert (pruned.bodies, pruned.deliveries) == (1, 0)
    assert await body_length(location, "handled") == 0 and await body_length(location, "failing") == 1000
    assert not await store.record_delivery("handled", "issues", b"x" * 1000)  # still "already received"
    assert [d[0] for d in await store.pending_deliveries()] == ["failing"]
    # Once the Forge can no longer redeliver, the ids go too.
    pruned = await store.prune(bodies=3600, deliveries=30 * 86400, now=time.time() + 31 * 86400)
    assert pruned.deliveries == 2 and await body_length(location, "handled") is None


async def test_trigger_keys_outlive_the_body_and_go_with_the_delivery_ids(store):
    run = await store.request_run(request(), trigger_key="comment:1", delivery_id="d1")
    await store.transition(run.id, "cancelled")
    await store.prune(bodies=0, deliveries=86400)
    assert await store.request_run(request(), trigger_key="comment:1") is None
    await store.prune(bodies=0, deliveries=86400, now=time.time() + 2 * 86400)
    assert await store.request_run(request(), trigger_key="comment:1") is not None


async def test_compaction_keeps_the_summary_row_of_a_reported_finished_run(store):
    done = await store.request_run(request(1), trigger_key="a")
    unreported = await store.request_run(request(1, agent="claude"), trigger_key="b")
    other = await store.request_run(request(2), trigger_key="c")
    for run in (done, unreported, other):
        await store.transition(run.id, "cancelled", result=RunResult(log_tail="x" * 4000, pushed=False))
    for run_id in (done.id, other.id):
        await store.set_reported(run_id, "comment_id", 77)
        await store.set_reported(run_id, "comment_body", "the status comment's text")
        await store.set_reported(run_id, "stopwatch", ["stopped", 1.0])
        await store.set_reported(run_id, "state_label", "dispatch/cancelled")
        await store.set_reported(run_id, "version", (await store.get(run_id)).version)
    assert await store.runs_to_report() == [await store.get(unreported.id)]
    assert await store.compact("acme", "widgets", "issue-1") == 1  # the unreported one waits
    assert await store.history(done.id) == []
    assert (await store.get(done.id)).result == RunResult(pushed=False)  # the log tail went with the workspace
    kept = {"comment_id": 77, "stopwatch": ["stopped", 1.0], "version": (await store.get(done.id)).version}
    assert await store.reported(done.id) == kept  # the comment's text and the label went
    assert len(await store.history(unreported.id)) == 2 and len(await store.history(other.id)) == 2
    assert [r.id for r in await store.runs(states=["cancelled"])] == [done.id, unreported.id, other.id]
    assert await store.runs_to_report() == [await store.get(unreported.id)]


async def test_the_file_shrinks_once_pruning_gives_the_space_back(tmp_path):
    path = tmp_path / "db.sqlite3"
    store = await SqliteStore.open(path)
    try:
        ids = [f"d{n}" for n in range(400)]
        await asyncio.gather(*(store.record_delivery(i, "issues", os.urandom(20_000)) for i in ids))
        await asyncio.gather(*(store.finish_delivery(i) for i in ids))
        await store.prune(bodies=3600, deliveries=86400)  # nothing old enough yet: only a checkpoint
        full = path.stat().st_size
        assert full > 400 * 20_000
        pruned = await store.prune(bodies=0, deliveries=86400, now=time.time() + 1)
        assert pruned.bodies == 400 and pruned.pages > 0
        assert path.stat().st_size < full / 10
    finally:
        await store.close()


async def test_an_existing_file_is_migrated_and_rebuilt_for_incremental_vacuum(tmp_path):
    path = tmp_path / "db.sqlite3"
    with closing(sqlite3.connect(path)) as db:  # a file as the first release left it
        db.executescript(MIGRATIONS[0] + "PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO runs (owner, repo, number, agent, pool, trigger, requested_by, state, workspace_key,"
            " created_at, updated_at, version) VALUES ('acme', 'widgets', 1, 'codex', 'codex', 'comment', 'bob',"
            " 'completed', 'issue-1', 0, 0, 4), ('acme', 'widgets', 2, 'codex', 'codex', 'comment', 'bob',"
            " 'completed', 'issue-2', 0, 0, 4)"
        )
        db.execute("INSERT INTO reported VALUES (1, 'version', '4'), (2, 'version', '3'), (1, 'comment_id', '9')")
        db.commit()
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    store = await SqliteStore.open(path)
    try:
        assert await store.reported(1) == {"version": 4, "comment_id": 9}
        assert [r.id for r in await store.runs_to_report()] == [2]
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)


async def test_a_claimed_run_belongs_to_its_replica_whose_machine_holds_its_own_maximum(store):
    for n in range(6):
        await store.request_run(request(n), trigger_key=f"k{n}")
    mine = await store.claim(max_running=5, pool_limits={}, spawn_intervals={}, replica="bot-1", replica_max_running=2)
    assert [r.replica for r in mine] == ["bot-1", "bot-1"]
    assert await store.claim(max_running=5, pool_limits={}, spawn_intervals={}, replica="bot-1",
                             replica_max_running=2) == []  # its machine is full
    theirs = await store.claim(max_running=5, pool_limits={}, spawn_intervals={}, replica="bot-2",
                               replica_max_running=4)
    assert [r.replica for r in theirs] == ["bot-2"] * 3  # the bot's total of 5 is reached first
    await store.transition(mine[0].id, "failed")
    assert len(await store.claim(max_running=5, pool_limits={}, spawn_intervals={}, replica="bot-1",
                                 replica_max_running=2)) == 1


async def test_a_claim_clears_the_reason_a_run_waited_for_and_a_cancel_wins_over_a_conditional_update(store):
    run = await store.request_run(request(), trigger_key="k")
    [claimed] = await store.claim(**LIMITS)
    await store.transition(run.id, "queued", reason="requeued after a restart", expect=("preparing",))
    assert (await store.get(run.id)).reason == "requeued after a restart"
    [claimed] = await store.claim(**LIMITS)
    assert claimed.reason == "" and (await store.get(run.id)).reason == ""
    assert "requeued after a restart" in [m.reason for m in await store.history(run.id)]
    assert (await store.update(run.id, reason="waits", expect=("preparing",))).reason == "waits"
    await store.transition(run.id, "cancelled", reason="by /cancel")
    assert await store.update(run.id, reason="waits", expect=("preparing",)) is None  # a cancel in between wins
    assert (await store.get(run.id)).reason == "by /cancel"


async def test_past_the_ttl_a_silent_replicas_runs_fail_with_the_reason_or_queue_again_once(store):
    now = time.time()
    await store.heartbeat("bot-1", "host-a", 3, now=now - 400)
    await store.heartbeat("bot-2", "host-b", 3, now=now - 10)
    for n in range(4):
        await store.request_run(request(n), trigger_key=f"k{n}")
    lost_runs = await store.claim(max_running=9, pool_limits={}, spawn_intervals={}, replica="bot-1",
                                  replica_max_running=2)
    alive = await store.claim(max_running=9, pool_limits={}, spawn_intervals={}, replica="bot-2",
                              replica_max_running=1)
    started, waiting = lost_runs
    await store.transition(started.id, "running", container_id="c1")
    changed = await store.reclaim_lost(300.0, now=now)
    assert {r.id: (r.state, r.reason) for r in changed} == {
        started.id: ("failed", "replica bot-1 was lost while the agent ran"),
        waiting.id: ("queued", "replica bot-1 was lost before the agent started: queued again"),
    }
    assert (await store.get(alive[0].id)).state == "preparing"  # bot-2 heartbeats: its run is its own
    assert [(r.id, r.lost_at is not None) for r in await store.replicas()] == [("bot-1", True), ("bot-2", False)]
    # Queued again once only: claimed by bot-1 again and lost again, it fails.
    [again] = await store.claim(max_running=9, pool_limits={}, spawn_intervals={}, replica="bot-1",
                                replica_max_running=1)
    assert again.id == waiting.id
    assert [(r.state, r.reason) for r in await store.reclaim_lost(300.0, now=now)] == [
        ("failed", "replica bot-1 was lost while the agent ran")
    ]
    # Back again: no longer lost, and nothing else of it is touched.
    await store.heartbeat("bot-1", "host-a", 3, now=now)
    assert await store.reclaim_lost(300.0, now=now) == []
    assert all(r.lost_at is None for r in await store.replicas())


async def test_a_lease_is_held_by_one_holder_until_it_expires_or_is_dropped(store):
    now = time.time()
    assert await store.take_lease("retention", "bot-1", 60.0, now=now)
    assert not await store.take_lease("retention", "bot-2", 60.0, now=now + 1)
    assert await store.take_lease("retention", "bot-1", 60.0, now=now + 30)  # renewed
    assert not await store.take_lease("retention", "bot-2", 60.0, now=now + 80)
    assert await store.take_lease("retention", "bot-2", 60.0, now=now + 91)  # bot-1's lapsed
    await store.drop_lease("retention", "bot-1")  # not its own: nothing happens
    assert not await store.take_lease("retention", "bot-1", 60.0, now=now + 92)
    await store.drop_lease("retention", "bot-2")
    assert await store.take_lease("retention", "bot-1", 60.0, now=now + 93)


async def test_work_under_leases_is_done_by_one_replica_at_a_time_and_all_or_none_of_its_keys(store):
    ttl = 0.3  # renewed every 0.1 s while held
    async with exclusive(store, ["report:run:1"], "bot-1", ttl) as held:
        assert held
        await asyncio.sleep(3 * ttl)  # past its TTL: it was renewed meanwhile
        async with exclusive(store, ["report:issue:acme:widgets:1", "report:run:1"], "bot-2", ttl) as theirs:
            assert not theirs
        assert await store.take_lease("report:issue:acme:widgets:1", "bot-3", ttl)  # bot-2 kept none of it
    async with exclusive(store, ["report:run:1"], "bot-2", ttl) as theirs:
        assert theirs  # given back when the work ended


async def test_a_cluster_job_keeps_to_the_replica_whose_turn_it_is(store):
    assert await cluster_turn(store, "retention", "bot-1", 60.0)
    assert not await cluster_turn(store, "retention", "bot-2", 60.0)
    assert await cluster_turn(store, "retention", "bot-1", 60.0)  # its next interval: still its own
    assert await cluster_turn(store, "lost-replicas", "bot-2", 60.0)  # each job has its own turn
