"""The store on a real SQLite file: atomic claims, the state machine, dedup, pools."""

import asyncio
import os
import sqlite3
import time
from contextlib import closing

import pytest

from bot.store import PoolState, RunRequest, RunResult, Store
from bot.store.policy import Limits, LiveRun, claimable
from bot.store.sqlite.schema import MIGRATIONS


@pytest.fixture
async def store(tmp_path):
    s = await Store.open(tmp_path / "db.sqlite3")
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


async def test_state_survives_reopening_the_file(tmp_path):
    s = await Store.open(tmp_path / "db.sqlite3")
    assert await s.record_delivery("d1", "issues", b"{}")
    run = await s.request_run(request(), trigger_key="k")
    await s.record_outcome("codex", quick_failure=True, threshold=1, pause=100.0)
    await s.close()
    s = await Store.open(tmp_path / "db.sqlite3")
    try:
        assert not await s.record_delivery("d1", "issues", b"{}")
        assert [d[0] for d in await s.pending_deliveries()] == ["d1"]
        assert (await s.get(run.id)).state == "queued"
        assert (await s.pool("codex")).paused_until > time.time()
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


def body_length(path, delivery_id):
    with closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT length(body) FROM deliveries WHERE id = ?", (delivery_id,)).fetchone()
    return row and row[0]


async def test_pruning_drops_handled_bodies_but_a_redelivery_is_still_already_received(tmp_path):
    path = tmp_path / "db.sqlite3"
    store = await Store.open(path)
    try:
        for delivery_id in ("handled", "failing"):
            assert await store.record_delivery(delivery_id, "issues", b"x" * 1000)
        await asyncio.gather(store.finish_delivery("handled"), store.finish_delivery("failing", "503"))
        hours_later = time.time() + 2 * 3600
        pruned = await store.prune(bodies=3600, deliveries=30 * 86400, now=hours_later)
        assert (pruned.bodies, pruned.deliveries) == (1, 0)
        assert body_length(path, "handled") == 0 and body_length(path, "failing") == 1000  # not handled yet
        assert not await store.record_delivery("handled", "issues", b"x" * 1000)  # still "already received"
        assert [d[0] for d in await store.pending_deliveries()] == ["failing"]
        # Once the Forge can no longer redeliver, the ids go too.
        pruned = await store.prune(bodies=3600, deliveries=30 * 86400, now=time.time() + 31 * 86400)
        assert pruned.deliveries == 2 and body_length(path, "handled") is None
    finally:
        await store.close()


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
    store = await Store.open(path)
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
    store = await Store.open(path)
    try:
        assert await store.reported(1) == {"version": 4, "comment_id": 9}
        assert [r.id for r in await store.runs_to_report()] == [2]
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        assert db.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
