"""What the PostgreSQL store adds to the one interface: several processes on one database.

Each "replica" here is a store of its own (its own pool of connections and its own listening
connection) on a real PostgreSQL server, as each bot replica has; they share only the database.
"""

import asyncio

import asyncpg
import pytest

from bot.store import PostgresStore
from bot.store.postgres.schema import MIGRATIONS
from tests.helpers import wait_for
from tests.test_store import request


@pytest.fixture
async def replicas(postgres_url):
    """Three stores on one fresh database, opened at once (so they migrate it at once)."""
    stores = await asyncio.gather(*(PostgresStore.open(postgres_url) for _ in range(3)))
    yield stores
    await asyncio.gather(*(s.close() for s in stores))


async def test_replicas_opening_a_fresh_database_at_once_migrate_it_once(replicas, postgres_url):
    db = await asyncpg.connect(postgres_url)
    try:
        assert await db.fetchval("SELECT count(*) FROM schema_version") == len(MIGRATIONS)
    finally:
        await db.close()


async def test_a_commit_on_one_replica_wakes_the_others_and_a_refused_change_wakes_nobody(replicas):
    a, b, c = replicas
    runs_b, outbox_c = b.subscribe("runs"), c.subscribe("outbox")
    run = await a.request_run(request(), trigger_key="k")
    assert await runs_b.wait(1.0) == {"runs"}
    assert await outbox_c.wait(0.05) == set()
    assert await a.transition(run.id, "completed") is None  # refused: nothing changed, nobody woken
    assert await runs_b.wait(0.2) == set()
    waiting = asyncio.create_task(outbox_c.wait(10.0))
    await b.enqueue("reply:1", "comment", "acme", "widgets", 1, {"body": "hi"})
    assert await asyncio.wait_for(waiting, 1.0) == {"outbox"}


async def test_claims_from_every_replica_at_once_keep_the_limits_exactly(replicas):
    a, b, c = replicas
    await asyncio.gather(*(
        (a, b, c)[n % 3].request_run(request(n, agent=("codex", "claude")[n % 2]), trigger_key=f"k{n}")
        for n in range(40)
    ))
    limits = dict(max_running=7, pool_limits={"codex": 3, "claude": 5}, spawn_intervals={})
    claims = await asyncio.gather(*(s.claim(**limits) for s in (a, b, c) for _ in range(10)))
    claimed = [r for batch in claims for r in batch]
    assert len(claimed) == 7 == len({r.id for r in claimed})
    pools = [r.pool for r in claimed]
    assert pools.count("codex") <= 3 and pools.count("claude") <= 5
    assert len(await a.runs(states=["preparing"])) == 7


async def test_a_delivery_or_a_trigger_reaching_two_replicas_at_once_counts_once(replicas):
    a, b, _ = replicas
    fresh = await asyncio.gather(*(s.record_delivery("d1", "issues", b"{}") for s in (a, b) * 5))
    assert sorted(fresh) == [False] * 9 + [True]
    made = await asyncio.gather(*(s.request_run(request(), trigger_key="comment:7") for s in (a, b) * 5))
    assert sum(r is not None for r in made) == 1
    # Labels: one live run per issue and agent, whichever replica hears the label first.
    made = await asyncio.gather(*(
        s.request_run(request(2), trigger_key=f"label:{n}", unless_active=True) for n, s in enumerate((a, b) * 5)
    ))
    assert sum(r is not None for r in made) == 1
    run = next(r for r in made if r)
    ends = await asyncio.gather(*(s.transition(run.id, "cancelled") for s in (a, b) * 3))
    assert sum(e is not None for e in ends) == 1


async def test_a_postgresql_restart_is_a_slow_call_not_an_error_and_wake_ups_resume(replicas, postgres_server):
    a, b, _ = replicas
    first = await a.request_run(request(1), trigger_key="before")
    heard = b.subscribe("runs", "pools")
    await heard.wait(1.0)
    stopping = asyncio.create_task(asyncio.to_thread(postgres_server.restart))
    # Writes and reads while the server goes down and comes back: each waits, none fails.
    during = await asyncio.gather(*(a.request_run(request(n), trigger_key=f"during{n}") for n in range(2, 6)))
    await stopping
    assert all(during)
    assert (await b.get(first.id)).state == "queued"
    assert len(await b.runs(states=["queued"])) == 5

    async def wakes_after_restart():  # b listens again: a commit on a reaches it, and only that one
        await a.set_pool_frozen("codex", True)
        return await heard.wait(0.5) == {"pools"}  # once listening again, b is woken for all it hears

    await wait_for(wakes_after_restart, timeout=15)


async def test_metrics_never_skip_a_change_committed_after_a_later_one(replicas, postgres_url):
    """Replicas take transition ids in one order and commit them in another: the reader waits at
    the gap rather than read past it and never see the slower change."""
    a, b, _ = replicas
    run, other = [await a.request_run(request(n), trigger_key=f"k{n}") for n in (1, 2)]
    start = await a.last_transition()
    slow = await asyncpg.connect(postgres_url)
    try:
        async with slow.transaction():
            await slow.execute(
                "INSERT INTO transitions (run_id, from_state, to_state, reason, at) VALUES ($1, 'queued', 'queued',"
                " 'slow', extract(epoch FROM now()))", run.id,
            )
            await b.transition(other.id, "cancelled")  # a later id, committed first
            assert await a.transitions_after(start, 10) == []
        seen = await a.transitions_after(start, 10)
    finally:
        await slow.close()
    assert [e.to_state for e in seen] == ["queued", "cancelled"]


COMMITTED = b"C\x00\x00\x00\x0bCOMMIT\x00"  # the server's CommandComplete for COMMIT


class CommitAnswerLost:
    """A TCP relay in front of PostgreSQL that, once armed, cuts the connection instead of passing
    on the answer to a COMMIT: the transaction is committed, the store never hears so."""

    def __init__(self, port: int) -> None:
        self.port, self.armed, self.cut = port, False, 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> "CommitAnswerLost":
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_) -> None:
        self.server.close()

    @property
    def listening(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    async def _relay(self, client_r, client_w) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(r, w, answers: bool) -> None:
            try:
                while data := await r.read(65536):
                    if answers and self.armed and COMMITTED in data:
                        self.armed, self.cut = False, self.cut + 1
                        w.write(data[:data.index(COMMITTED)])
                        break
                    w.write(data)
                    await w.drain()
            finally:
                for writer in (client_w, server_w):
                    writer.close()

        await asyncio.gather(pipe(client_r, server_w, False), pipe(server_r, client_w, True), return_exceptions=True)


async def test_a_transition_whose_commit_answer_was_lost_returns_the_run_moved_and_wakes_the_workers(postgres_url):
    """The retry after a lost answer to COMMIT finds its own change made: the caller gets the moved
    run (not None, which ``agent.start`` reads as "cancelled while preparing" and kills a running
    run for), and this replica's workers are woken as for any change."""
    port = int(postgres_url.rsplit(":", 1)[1].split("/")[0])
    async with CommitAnswerLost(port) as relay:
        store = await PostgresStore.open(postgres_url.replace(f":{port}/", f":{relay.listening}/"))
        try:
            run = await store.request_run(request(), trigger_key="k")
            [claimed] = await store.claim(max_running=1, pool_limits={}, spawn_intervals={})
            runs = store.subscribe("runs")
            await runs.wait(0.01)  # what the claim announced
            relay.armed = True
            moved = await store.transition(claimed.id, "running", expect=("preparing",))
            assert relay.cut == 1  # the answer was lost indeed
            assert moved is not None and moved.state == "running" and moved.id == run.id
            assert await runs.wait(1.0) == {"runs"}
            assert [m.to_state for m in await store.history(run.id)].count("running") == 1
        finally:
            await store.close()


async def test_a_request_and_a_cancel_whose_commit_answers_were_lost_return_what_they_did(postgres_url):
    """Their retries find their own trigger key claimed: each knows its own claim by its mark and
    returns its run and its cancelled runs, not None (read as a replay of the trigger: no reply)."""
    port = int(postgres_url.rsplit(":", 1)[1].split("/")[0])
    async with CommitAnswerLost(port) as relay:
        store = await PostgresStore.open(postgres_url.replace(f":{port}/", f":{relay.listening}/"))
        try:
            relay.armed = True
            run = await store.request_run(request(), trigger_key="comment:7", unless_active=True)
            assert relay.cut == 1
            assert run is not None and run.state == "queued"
            assert [r.id for r in await store.runs()] == [run.id]
            relay.armed = True
            cancelled = await store.cancel([run.id], reason="by /cancel", trigger_key="cancel:8")
            assert relay.cut == 2
            assert [r.id for r in cancelled or []] == [run.id] and cancelled[0].state == "cancelled"
            assert await store.request_run(request(), trigger_key="comment:7") is None  # a replay still is one
            assert await store.cancel([run.id], reason="by /cancel", trigger_key="cancel:8") is None
        finally:
            await store.close()
