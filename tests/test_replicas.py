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
