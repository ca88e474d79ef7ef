"""Two bot replicas on one PostgreSQL, end to end: two real ``dispatchbot serve`` processes with
their own data dirs, the real Docker engine, the scripted agent image, the fake Forge behind a load
balancer (tests/replicas.py). Limits hold across the cluster, each delivery makes one run, each
Forge write happens once, and PostgreSQL restarting under them loses nothing."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest

from bot.store import ACTIVE

from .helpers import bot_comments, wait_for
from .replicas import Cluster, replicas  # noqa: F401  (a fixture)

pytestmark = pytest.mark.docker

LABEL = "dispatch:codex"


def ended(runs) -> bool:
    return bool(runs) and all(r.state not in ACTIVE and r.state != "queued" for r in runs)


async def reported(cluster: Cluster, count: int, timeout: float = 120.0) -> list:
    """Wait until ``count`` runs ended and the Forge shows all of it (nothing left to report or
    to write); the runs."""
    runs = await cluster.wait_runs(lambda runs: len(runs) >= count and ended(runs), timeout=timeout)
    store = await cluster.store()

    async def caught_up():
        cluster.check_alive()
        return await store.runs_to_report() == [] and (await store.census()).outbox == 0

    await wait_for(caught_up, timeout=60, interval=0.2)
    return runs


def repeated_writes(forge) -> list[tuple]:
    """Forge writes asked for more than once with the same body: an outbox item, a comment, a
    label, a stopwatch or a pull request done twice (also when the Forge refused the second)."""
    writes = Counter((r.method, r.path, json.dumps(r.body, sort_keys=True)) for r in forge.requests if r.method != "GET")
    return [write for write, n in writes.items() if n > 1]


async def test_one_delivery_sent_to_both_replicas_at_once_makes_one_run(world, replicas):  # noqa: F811
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    cluster = await replicas()
    issue = await forge.create_issue(repo, bob, "Add notes scenario:edit-commit", "")
    cluster.balancer.route = "all"  # a proxy that retried on the other replica at once
    await forge.set_labels(repo, issue.number, bob, [LABEL])
    [labelled] = [f for f in cluster.balancer.forwarded if f.action == "label_updated" and f.sender == "bob"]
    assert sorted(labelled.replicas) == ["bot-1", "bot-2"]
    assert sorted(labelled.statuses) == [200, 202]  # stored once; the other answers "already received"
    [run] = await reported(cluster, 1)
    assert run.state == "completed", run.reason
    assert [r.id for r in await cluster.runs()] == [run.id]
    assert (await cluster.moves(run.id)).count("running") == 1
    assert len(bot_comments(world, issue.number)) == 1
    assert [p.head_branch for p in forge.pulls(repo)] == [run.branch]
    assert repeated_writes(forge) == []


async def test_twenty_issues_on_two_replicas_keep_max_running_and_write_each_thing_once(world, replicas):  # noqa: F811
    """20 issues labelled, the deliveries alternating between the replicas; ``max_running = 3`` for
    the cluster and 2 per replica: never more than 3 agent containers on the engine at once (nor 2
    of one replica), 20 pull requests, one status comment each, no Forge write twice."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    cluster = await replicas(DISPATCHBOT_MAX_RUNNING="3", DISPATCHBOT_REPLICA__MAX_RUNNING="2")
    issues = [await forge.create_issue(repo, bob, f"Task {n} scenario:slow-ok:3", "") for n in range(20)]
    async with cluster.watch_agents() as watch:
        for n, issue in enumerate(issues):
            cluster.balancer.route = n % 2
            await forge.set_labels(repo, issue.number, bob, [LABEL])
        cluster.balancer.route = "alternate"
        runs = await reported(cluster, 20, timeout=300)
    labelled = [f for f in cluster.balancer.forwarded if f.action == "label_updated" and f.sender == "bob"]
    assert Counter(name for f in labelled for name in f.replicas) == {"bot-1": 10, "bot-2": 10}
    assert all(f.statuses == [202] for f in labelled)
    assert len(runs) == 20 and all(r.state == "completed" for r in runs), [(r.id, r.state, r.reason) for r in runs]
    assert watch.most == 3, watch  # reached, never passed
    assert max(watch.most_per.values()) <= 2, watch.most_per
    assert len(watch.seen) == 20  # one agent container per run: none ran twice
    for run in runs:
        assert (await cluster.moves(run.id)).count("running") == 1, run.id
    assert sorted(p.head_branch for p in forge.pulls(repo)) == sorted(r.branch for r in runs)
    assert [len(bot_comments(world, issue.number)) for issue in issues] == [1] * 20
    assert repeated_writes(forge) == []


async def test_postgresql_restarted_mid_run_loses_nothing_and_no_replica_dies(world, replicas):  # noqa: F811
    """PostgreSQL goes down (fast shutdown: every connection cut) while an agent runs on replica 1,
    and a delivery reaches replica 2 while it is down; once it is back, both runs end, once each."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    cluster = await replicas()
    first = await forge.create_issue(repo, bob, "First scenario:slow-ok:8", "")
    second = await forge.create_issue(repo, bob, "Second scenario:edit-commit", "")
    cluster.balancer.route = 0
    await forge.set_labels(repo, first.number, bob, [LABEL])
    await cluster.wait_runs(lambda runs: [r.state for r in runs] == ["running"], timeout=60)
    await asyncio.to_thread(cluster.postgres.stop)
    cluster.balancer.route = 1
    labelling = asyncio.create_task(forge.set_labels(repo, second.number, bob, [LABEL]))

    def in_flight():
        return [f for f in cluster.balancer.forwarded if f.action == "label_updated" and f.sender == "bob"][1:]

    [delivery] = await wait_for(in_flight, timeout=10)
    await asyncio.to_thread(cluster.postgres.start)
    await labelling
    assert delivery.statuses == [202]  # acknowledged once stored, after the outage
    runs = await reported(cluster, 2, timeout=180)
    assert [(r.number, r.state) for r in runs] == [(first.number, "completed"), (second.number, "completed")], \
        [r.reason for r in runs]
    cluster.check_alive()
    for run in runs:
        moves = await cluster.moves(run.id)
        assert moves.count("running") == 1 and moves.count("completed") == 1, (run.id, moves)
    assert sorted(p.head_branch for p in forge.pulls(repo)) == sorted(r.branch for r in runs)
    assert [len(bot_comments(world, i.number)) for i in (first, second)] == [1, 1]
    assert repeated_writes(forge) == []
