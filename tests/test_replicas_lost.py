"""A replica that dies, and one that is full: two real ``dispatchbot serve`` processes on one
PostgreSQL (tests/replicas.py), the real Docker engine, the scripted agent image, the fake Forge.

kill -9 the replica whose agent runs: the other goes on serving webhooks and starting runs; back
within ``replica.ttl``, the first re-adopts its run, which ends with one pull request; kept down
past it, its run fails with the reason on the Forge and ``/retry`` runs it on the other replica.
"""

from __future__ import annotations

import pytest

from .helpers import bot_comments, wait_for
from .replicas import Cluster, replicas  # noqa: F401  (a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]

LABEL = "dispatch:codex"


async def labelled(world, title: str):
    issue = await world["forge"].create_issue(world["repo"], world["bob"], title, "")
    await world["forge"].set_labels(world["repo"], issue.number, world["bob"], [LABEL])
    return issue


async def running_on(cluster: Cluster, number: int):
    """Wait until the run of issue ``number`` is running; it and the replica that owns it."""
    [run] = await of_issue(cluster, number, "running")
    [owner] = [r for r in cluster.replicas if r.name == run.replica]
    return run, owner


async def of_issue(cluster: Cluster, number: int, state: str, *, down: tuple = (), timeout: float = 120.0):
    """Wait until a run of issue ``number`` is in ``state``; the runs of that issue in it. Fails at
    once if a replica died that is not ``down`` (killed by the test)."""

    async def found():
        cluster.check_alive(but=down)
        return [r for r in await cluster.runs() if r.number == number and r.state == state]

    return await wait_for(found, timeout=timeout, interval=0.2)


def sent_to(cluster: Cluster, since: int) -> set[str]:
    """The replicas that deliveries went to since the balancer's ``since``-th one."""
    return {name for f in cluster.balancer.forwarded[since:] for name in f.replicas}


async def reported(cluster: Cluster, run_id: int, state: str, *, down: tuple = ()):
    """Wait until the run reached ``state`` and the Forge shows it; the run."""
    store = await cluster.store()

    async def shown():
        cluster.check_alive(but=down)
        run = await store.get(run_id)
        return run if run.state == state and (await store.reported(run_id)).get("version") == run.version else None

    return await wait_for(shown, timeout=120, interval=0.2)


async def test_a_replica_killed_while_its_agent_runs_and_back_within_the_ttl_re_adopts_its_run(world, replicas):  # noqa: F811
    forge, repo = world["forge"], world["repo"]
    # Adoption every 2 s: the live replica looks at the dead one's run many times meanwhile.
    cluster = await replicas(DISPATCHBOT_REPLICA__TTL="120", DISPATCHBOT_REPLICA__HEARTBEAT="1",
                             DISPATCHBOT_SCHEDULE__RECONCILE="2")
    first = await labelled(world, "Slow notes scenario:slow-ok:20")
    run, owner = await running_on(cluster, first.number)
    [other] = [r for r in cluster.replicas if r is not owner]
    owner.kill()
    since = len(cluster.balancer.forwarded)

    # The other replica goes on: it takes the next delivery and starts its run at once.
    second = await labelled(world, "Quick notes scenario:edit-commit")
    [quick] = await of_issue(cluster, second.number, "completed", down=(owner,))
    assert sent_to(cluster, since) == {other.name}
    assert quick.replica == other.name
    assert (await (await cluster.store()).get(run.id)).state == "running"  # nobody took or gave up on the first

    await owner.start()  # within the TTL: it is still the owner, and picks its run up where it was
    done = await reported(cluster, run.id, "completed")
    assert done.replica == owner.name
    assert (await cluster.moves(run.id)).count("running") == 1  # its agent ran once: re-adopted, not restarted
    assert [p.head_branch for p in forge.pulls(repo) if p.head_branch == done.branch] == [done.branch]
    assert len(forge.git_log(repo, done.branch)) == 2  # one commit: no second agent
    for issue in (first, second):
        assert len(bot_comments(world, issue.number)) == 1
    assert (await (await cluster.store()).get(quick.id)).state == "completed"


async def test_a_replica_kept_down_past_the_ttl_fails_its_run_with_the_reason_and_retry_runs_elsewhere(world, replicas):  # noqa: F811
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    cluster = await replicas(DISPATCHBOT_REPLICA__TTL="6", DISPATCHBOT_REPLICA__HEARTBEAT="1")
    issue = await labelled(world, "Slow notes scenario:slow-ok:15")
    run, owner = await running_on(cluster, issue.number)
    [other] = [r for r in cluster.replicas if r is not owner]
    owner.kill()

    failed = await reported(cluster, run.id, "failed", down=(owner,))
    reason = f"replica {owner.name} was lost while the agent ran"
    assert failed.reason == reason
    [comment] = bot_comments(world, issue.number)
    assert reason in comment.body
    assert forge.stopwatches(world["bot"]) == []  # stopped for it by the live replica
    replicas_seen = {r.id: r.lost_at is not None for r in await (await cluster.store()).replicas()}
    assert replicas_seen == {owner.name: True, other.name: False}

    await forge.create_comment(repo, issue.number, bob, "/retry")
    [retried] = [r for r in await of_issue(cluster, issue.number, "completed", down=(owner,)) if r.retry_of == run.id]
    assert retried.replica == other.name
    await reported(cluster, retried.id, "completed", down=(owner,))  # its pull request is the reporter's
    assert [p.head_branch for p in forge.pulls(repo)] == [retried.branch]


async def test_a_webhook_on_a_full_replica_starts_its_run_on_the_other_woken_by_postgresql(world, replicas):  # noqa: F811
    # Each machine holds one agent; no resync for an hour: only a cross-replica wake-up
    # (LISTEN/NOTIFY) can make the other replica claim the second run.
    cluster = await replicas(DISPATCHBOT_REPLICA__MAX_RUNNING="1", DISPATCHBOT_SCHEDULE__DRAIN="3600")
    first = await labelled(world, "Slow notes scenario:slow-ok:20")
    run, full = await running_on(cluster, first.number)
    cluster.balancer.route = cluster.replicas.index(full)  # the next delivery lands on the full one
    since = len(cluster.balancer.forwarded)
    second = await labelled(world, "Quick notes scenario:edit-commit")
    [quick] = await of_issue(cluster, second.number, "completed", timeout=60)
    assert sent_to(cluster, since) == {full.name}
    [other] = [r for r in cluster.replicas if r is not full]
    assert quick.replica == other.name
    assert (await (await cluster.store()).get(run.id)).state == "running"  # the full one still holds its own

