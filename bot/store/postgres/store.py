"""The PostgreSQL backend: the same store as SQLite's, shared by several bot replicas.

Each change is one transaction; what must be decided by one transaction at a time in the whole
cluster (a claim against the limits, a label's request for an issue, a branch for an issue) holds
an advisory lock, and a transition locks its run's row, so N replicas claiming at once start
exactly what one would. Once a transaction commits, subscribers on every replica hear which
tables it touched (``feed``). Times are epoch seconds as doubles, as in SQLite.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from bot.store import policy
from bot.store.model import ACTIVE, CANCELLABLE, COLUMN_FACETS, LIVE, STATES, OutboxItem, PoolState, Pruned, Run
from bot.store.model import RunRequest, allowed_from, move_changes, utc_day
from bot.store.postgres import retention, rows
from bot.store.postgres.connection import POOL_SIZE, Connections, keep_session
from bot.store.postgres.deliveries import DeliveryWriter
from bot.store.postgres.feed import ChangeFeed
from bot.store.postgres.rows import Tx
from bot.store.postgres.schema import migrate
from bot.store.postgres.replicas import Replicas
from bot.store.postgres.usage import UsageRecords
from bot.store.replicas import ReplicaRules
from bot.store.signals import Subscription


# What each repository and pool spent on one UTC day, for a claim under daily budgets.
SPENT = ("SELECT r.owner, r.repo, r.pool, sum(u.cost_usd) FROM usage u JOIN runs r ON r.id = u.run_id"
         " WHERE u.day = $1 GROUP BY r.owner, r.repo, r.pool")


class PostgresStore(Replicas, UsageRecords, ReplicaRules):
    def __init__(self, connections: Connections) -> None:
        self._c = connections
        self._deliveries = DeliveryWriter(connections)

    @classmethod
    async def open(cls, url: str) -> PostgresStore:
        """Connect, bring the schema up to date (once in the cluster) and start listening."""
        pool = await asyncpg.create_pool(url, min_size=1, max_size=POOL_SIZE, reset=keep_session)
        feed = ChangeFeed(url)
        try:
            async with pool.acquire() as db:
                await migrate(db)
            await feed.start()
        except BaseException:
            await pool.close()
            raise
        return cls(Connections(pool, feed))

    async def close(self) -> None:
        await self._deliveries.close()
        await self._c.close()

    def subscribe(self, *topics: str) -> Subscription:
        """Hear of every committed write to these tables, by any replica."""
        subscription = Subscription(topics)
        self._c.feed.add(subscription)
        return subscription

    async def ping(self) -> bool:
        return bool(await self._c.read("SELECT 1"))

    # Deliveries ---------------------------------------------------------------------------

    async def record_delivery(self, delivery_id: str, event_type: str, body: bytes) -> bool:
        """Store a delivery before it is acknowledged; False if its id was seen before (by any
        replica). Deliveries that arrive together share one commit."""
        return await self._deliveries.record(delivery_id, event_type, body)

    def finish_delivery(self, delivery_id: str, error: str | None = None) -> asyncio.Future[None]:
        """Mark handled, or count a failed attempt so a later pass retries it; written with the
        next group commit, which the returned future tells."""
        return self._deliveries.finish(delivery_id, error)

    async def pending_deliveries(self, max_attempts: int = 10, limit: int = -1) -> list[tuple[str, str, bytes]]:
        """The oldest deliveries not yet handled that failed fewer than ``max_attempts`` times."""
        found = await self._c.read(
            "SELECT id, event_type, body FROM deliveries WHERE handled_at IS NULL AND attempts < $1"
            " ORDER BY received_at LIMIT $2",
            max_attempts, None if limit < 0 else limit,
        )
        return [(r["id"], r["event_type"], bytes(r["body"])) for r in found]

    # Runs ---------------------------------------------------------------------------------

    async def request_run(
        self, req: RunRequest, *, trigger_key: str, delivery_id: str = "", unless_active: bool = False
    ) -> Run | None:
        """Queue a run unless its trigger was seen before, or (labels) one is not over yet (live or blocked)."""
        trigger = _Trigger(trigger_key)

        async def step(tx: Tx) -> Run | None:
            if (claimed := await trigger.lost_claim(tx)) is not None:
                return await rows.get_run(tx, claimed["run_id"])
            if unless_active:
                await tx.lock(rows.ISSUE, f"{req.owner}/{req.repo}#{req.number}")
                live = await tx.fetchval(
                    "SELECT 1 FROM runs WHERE owner = $1 AND repo = $2 AND number = $3 AND agent = $4"
                    " AND state = ANY($5::text[])",
                    req.owner, req.repo, req.number, req.agent, list(CANCELLABLE),
                )
                if live:
                    return None
            now = time.time()
            if not await trigger.claim(tx, delivery_id, now):
                return None
            values = {**req.__dict__, "workspace_key": req.workspace_key, "state": "queued"}
            values["options"] = json.dumps(req.options)
            values |= {"created_at": now, "updated_at": now}
            marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
            [row] = await tx.returning(
                f"INSERT INTO runs ({', '.join(values)}) VALUES ({marks}) RETURNING id", *values.values()
            )
            await tx.execute("UPDATE triggers SET run_id = $1 WHERE key = $2", row["id"], trigger_key)
            await rows.log_transition(tx, row["id"], None, "queued", req.trigger, now)
            return await rows.get_run(tx, row["id"])

        return await self._c.write(step, "runs", "triggers", "transitions")

    async def get(self, run_id: int) -> Run | None:
        found = await self._c.read("SELECT * FROM runs WHERE id = $1", run_id)
        return Run.from_row(found[0]) if found else None

    async def runs(
        self,
        *,
        states: Iterable[str] | None = None,
        owner: str | None = None,
        repo: str | None = None,
        number: int | None = None,
        workspace_key: str | None = None,
    ) -> list[Run]:
        clauses, args = [], []
        if states is not None:
            args.append(list(states))
            clauses.append(f"state = ANY(${len(args)}::text[])")
        for column, value in (("owner", owner), ("repo", repo), ("number", number), ("workspace_key", workspace_key)):
            if value is not None:
                args.append(value)
                clauses.append(f"{column} = ${len(args)}")
        where = " AND ".join(clauses) or "TRUE"
        return [Run.from_row(r) for r in await self._c.read(f"SELECT * FROM runs WHERE {where} ORDER BY id", *args)]

    async def transition(
        self,
        run_id: int,
        to: str,
        *,
        reason: str = "",
        expect: Iterable[str] | None = None,
        trigger_key: str = "",
        **changes: Any,
    ) -> Run | None:
        """Move a run to ``to`` if the state machine allows it from its current state (see
        ``SqliteStore.transition``); the run's row is locked while it is decided."""
        assert to in STATES, to
        allowed = allowed_from(to, expect)
        first: int | None = None  # the version the first attempt read

        async def step(tx: Tx) -> Run | None:
            nonlocal first
            run = await rows.get_run(tx, run_id, lock=True)
            if run is not None and first is not None and run.version == first + 1 and run.state == to:
                return run  # an attempt committed the move, and the answer to its COMMIT was lost
            if run is not None and first is None:
                first = run.version
            if run is None or run.state not in allowed:
                return None
            if trigger_key and not await rows.claim_trigger(tx, trigger_key, "", time.time()):
                return None
            return await _move(tx, run, to, reason, changes)

        return await self._c.write(step, "runs", "triggers", "transitions")

    async def cancel(self, run_ids: Iterable[int], *, reason: str, trigger_key: str) -> list[Run] | None:
        """Cancel those of the runs that still may be, once per trigger (see ``SqliteStore.cancel``):
        None when the trigger was seen before, so a replay of it cancels nothing."""
        allowed = allowed_from("cancelled")
        trigger = _Trigger(trigger_key)

        async def step(tx: Tx) -> list[Run] | None:
            if (claimed := await trigger.lost_claim(tx)) is not None:  # its runs ended when it claimed
                return [r for r in [await rows.get_run(tx, i) for i in sorted(set(run_ids))]
                        if r is not None and r.state == "cancelled" and r.ended_at == claimed["created_at"]]
            now = time.time()
            if not await trigger.claim(tx, "", now):
                return None
            cancelled = []
            for run_id in sorted(set(run_ids)):  # rows locked in one order: two cancels never deadlock
                run = await rows.get_run(tx, run_id, lock=True)
                if run is not None and run.state in allowed:
                    cancelled.append(await _move(tx, run, "cancelled", reason, {}, now))
            return cancelled

        return await self._c.write(step, "runs", "triggers", "transitions")

    async def update(self, run_id: int, *, expect: Iterable[str] | None = None, **changes: Any) -> Run | None:
        """Change fields of a run without changing its state (see ``SqliteStore.update``)."""

        async def step(tx: Tx) -> Run | None:
            if expect is not None:
                run = await rows.get_run(tx, run_id, lock=True)
                if run is None or run.state not in expect:
                    return None
            await rows.update_run(tx, run_id, changes | {"updated_at": time.time()})
            return await rows.get_run(tx, run_id)

        return await self._c.write(step, "runs")

    async def assign_branch(self, run_id: int, choices: Sequence[str]) -> Run:
        """Give an issue's run the first of ``choices`` that no run of another issue in the repo
        has (see ``SqliteStore.assign_branch``); one repository's assignments take turns."""

        async def step(tx: Tx) -> Run:
            run = await rows.get_run(tx, run_id)
            assert run is not None and not run.is_pull, run
            await tx.lock(rows.BRANCHES, f"{run.owner}/{run.repo}")
            for branch in choices:
                taken = await tx.fetchval(
                    "SELECT 1 FROM runs WHERE owner = $1 AND repo = $2 AND branch = $3 AND NOT is_pull"
                    " AND number != $4 LIMIT 1",
                    run.owner, run.repo, branch, run.number,
                )
                if not taken:
                    break
            await rows.update_run(tx, run_id, {"branch": branch, "updated_at": time.time()})
            return await rows.get_run(tx, run_id)

        return await self._c.write(step, "runs")

    async def claim(
        self,
        *,
        max_running: int,
        pool_limits: dict[str, int],
        spawn_intervals: dict[str, float],
        frozen: bool = False,
        frozen_pools: frozenset[str] = frozenset(),
        held: frozenset[policy.WorkspaceKey] = frozenset(),
        replica: str = "",
        replica_max_running: int | None = None,
        daily: policy.Daily | None = None,
        now: float | None = None,
    ) -> list[Run]:
        """Atomically move as many queued runs to ``preparing`` as the limits allow, FIFO, none onto
        a ``held`` workspace, for ``replica`` (see ``SqliteStore.claim``), exactly across all replicas: claims take turns on
        one advisory lock, and only a claim makes a run active, so each decides on every active
        run there is, and on what every replica's runs spent today (``daily``)."""
        now = time.time() if now is None else now

        async def step(tx: Tx) -> list[Run]:
            await tx.lock(rows.CLAIM)
            if policy.is_frozen(await tx.fetchval("SELECT value FROM flags WHERE key = 'frozen'"), frozen):
                return []
            room = None
            if replica_max_running is not None:
                room = replica_max_running - await tx.fetchval(
                    "SELECT count(*) FROM runs WHERE replica = $1 AND state = ANY($2::text[])", replica, list(ACTIVE)
                )
            limits = policy.Limits(max_running, pool_limits, spawn_intervals, frozen_pools, room, daily)
            spent = policy.Spent.of(await tx.fetch(SPENT, utc_day(now)) if daily is not None else [])
            live = await tx.fetch(
                f"SELECT {', '.join(policy.LiveRun._fields)} FROM runs WHERE state = ANY($1::text[])", list(LIVE)
            )
            pools = {p["name"]: rows.pool_state(p) for p in await tx.fetch("SELECT * FROM pools")}
            claimed: list[Run] = []
            for run in policy.claimable([policy.LiveRun(*r) for r in live], pools, limits, now, held, spent):
                # A run cancelled since it was read stays cancelled: only a queued one moves.
                moved = await tx.returning(
                    "UPDATE runs SET state = 'preparing', reason = '', updated_at = $2, attempts = attempts + 1, replica = $3,"
                    " version = version + 1 WHERE id = $1 AND state = 'queued' RETURNING *",
                    run.id, now, replica,
                )
                if not moved:
                    continue
                await rows.log_transition(tx, run.id, "queued", "preparing", "claimed", now)
                await tx.execute(
                    "INSERT INTO pools (name, last_spawn_at) VALUES ($1, $2)"
                    " ON CONFLICT (name) DO UPDATE SET last_spawn_at = excluded.last_spawn_at",
                    run.pool, now,
                )
                claimed.append(Run.from_row(moved[0]))
            return claimed

        return await self._c.write(step, "runs", "transitions", "pools")

    async def queue_position(self, run_id: int) -> int | None:
        """1-based position among queued runs, or None when not queued."""
        found = await self._c.read(
            "SELECT (SELECT count(*) FROM runs q WHERE q.state = 'queued' AND q.id <= r.id)"
            " FROM runs r WHERE r.id = $1 AND r.state = 'queued'",
            run_id,
        )
        return found[0][0] if found else None

    # Pools and flags ----------------------------------------------------------------------

    async def pool(self, name: str) -> PoolState:
        found = await self._c.read("SELECT * FROM pools WHERE name = $1", name)
        return rows.pool_state(found[0]) if found else PoolState(name, None, 0.0, 0, 0.0)

    async def pools(self) -> list[PoolState]:
        return [rows.pool_state(r) for r in await self._c.read("SELECT * FROM pools ORDER BY name")]

    async def set_pool_frozen(self, name: str, frozen: bool | None) -> None:
        await self._c.write(lambda tx: tx.execute(
            "INSERT INTO pools (name, frozen) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET frozen = excluded.frozen",
            name, frozen,
        ), "pools")

    async def record_outcome(self, pool: str, *, quick_failure: bool, threshold: int, pause: float) -> float:
        """Count quick failures of a pool; at ``threshold`` pause it. Returns paused_until (0 if not).
        One statement each, so replicas counting at once count every failure."""

        async def step(tx: Tx) -> float:
            if not quick_failure:
                await tx.execute(
                    "INSERT INTO pools (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET quick_failures = 0", pool
                )
                return 0.0
            [row] = await tx.returning(
                "INSERT INTO pools (name, quick_failures) VALUES ($1, 1) ON CONFLICT (name)"
                " DO UPDATE SET quick_failures = pools.quick_failures + 1 RETURNING quick_failures",
                pool,
            )
            if row["quick_failures"] < threshold:
                return 0.0
            until = time.time() + pause
            await tx.execute("UPDATE pools SET paused_until = $2, quick_failures = 0 WHERE name = $1", pool, until)
            return until

        return await self._c.write(step, "pools")

    async def set_flag(self, key: str, value: str) -> None:
        await self._c.write(lambda tx: tx.execute(
            "INSERT INTO flags (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key, value,
        ), "flags")

    async def flag(self, key: str) -> str | None:
        found = await self._c.read("SELECT value FROM flags WHERE key = $1", key)
        return found[0]["value"] if found else None

    # Outbox and reported state ------------------------------------------------------------

    async def enqueue(
        self, key: str, kind: str, owner: str, repo: str, number: int, payload: dict[str, Any],
        run_id: int | None = None,
    ) -> bool:
        """Queue one Forge write, once per key in the cluster; False if that key was queued before."""
        now = time.time()
        return await self._c.write(lambda tx: tx.execute(
            "INSERT INTO outbox (key, kind, owner, repo, number, payload, run_id, next_at, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (key) DO NOTHING",
            key, kind, owner, repo, number, json.dumps(payload), run_id, now, now,
        ), "outbox") == 1

    async def due_outbox(self, now: float | None = None, limit: int = 200, per_issue: int = 10) -> list[OutboxItem]:
        """Due items, the oldest first, at most ``per_issue`` of each issue: one issue's backlog
        (a flood of replies) never keeps another issue's items from being delivered."""
        found = await self._c.read(
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY owner, repo, number ORDER BY id) AS nth"
            " FROM outbox WHERE done_at IS NULL AND next_at <= $1) due WHERE nth <= $2 ORDER BY id LIMIT $3",
            time.time() if now is None else now, per_issue, limit,
        )
        return [rows.outbox_item(r) for r in found]

    async def outbox_item(self, item_id: int) -> OutboxItem | None:
        """A pending item as it is now, None once done: a reporter pass checks it before acting."""
        found = await self._c.read("SELECT * FROM outbox WHERE id = $1 AND done_at IS NULL", item_id)
        return rows.outbox_item(found[0]) if found else None

    async def outbox_done(self, item_id: int, error: str = "", retry_at: float | None = None) -> None:
        """Finish an outbox item, or (with ``retry_at``) count a failure and try again then."""
        if retry_at is None:
            sql, args = "UPDATE outbox SET done_at = $2, error = $3 WHERE id = $1", (time.time(), error)
        else:
            sql, args = "UPDATE outbox SET attempts = attempts + 1, next_at = $2, error = $3 WHERE id = $1", (
                retry_at, error)
        await self._c.write(lambda tx: tx.execute(sql, item_id, *args), "outbox")

    async def next_outbox_at(self, after: float = 0.0) -> float | None:
        """When the next pending item falls due, among those not due by ``after``."""
        return (await self._c.read("SELECT min(next_at) FROM outbox WHERE done_at IS NULL AND next_at > $1", after))[0][0]

    async def runs_to_report(self) -> list[Run]:
        """Runs changed since the reporter last made the Forge show them (an index holds just those)."""
        found = await self._c.read("SELECT * FROM runs WHERE reported_version < version ORDER BY id")
        return [Run.from_row(r) for r in found]

    async def reported(self, run_id: int) -> dict[str, Any]:
        found = await self._c.read("SELECT facet, value FROM reported WHERE run_id = $1", run_id)
        facets = {r["facet"]: json.loads(r["value"]) for r in found}
        columns = await self._c.read(f"SELECT {', '.join(COLUMN_FACETS.values())} FROM runs WHERE id = $1", run_id)
        for facet, column in COLUMN_FACETS.items():
            if columns and columns[0][column]:
                facets[facet] = columns[0][column]
        return facets

    async def set_reported(self, run_id: int, facet: str, value: Any) -> None:
        if facet in COLUMN_FACETS:
            sql, args = f"UPDATE runs SET {COLUMN_FACETS[facet]} = $2 WHERE id = $1", (value,)
        else:
            sql, args = (
                "INSERT INTO reported (run_id, facet, value) VALUES ($1, $2, $3)"
                " ON CONFLICT (run_id, facet) DO UPDATE SET value = excluded.value", (facet, json.dumps(value)),
            )
        await self._c.write(lambda tx: tx.execute(sql, run_id, *args), "reported")

    # Retention ----------------------------------------------------------------------------

    async def prune(self, *, bodies: float, deliveries: float, now: float | None = None) -> Pruned:
        """Forget what no one needs any more (see ``SqliteStore.prune``); PostgreSQL's vacuum then
        makes the space reusable and gives back what it can at the end of each table."""
        now = time.time() if now is None else now
        before = dict.fromkeys(("deliveries", "triggers", "outbox"), now - deliveries) | {"bodies": now - bodies}
        return await retention.prune(self._c, before)

    async def compact(self, owner: str, repo: str, workspace_key: str) -> int:
        """Once a workspace is swept, reduce its finished runs to their summary row; how many."""
        return await self._c.write(
            lambda tx: retention.compact(tx, owner, repo, workspace_key), "runs", "transitions", "outbox", "reported"
        )


async def _move(tx: Tx, run: Run, to: str, reason: str, changes: dict[str, Any], now: float | None = None) -> Run:
    """Move the locked ``run`` to ``to`` with ``changes``, logging the transition."""
    now = time.time() if now is None else now
    await rows.update_run(tx, run.id, move_changes(to, reason, changes, now))
    await rows.log_transition(tx, run.id, run.state, to, reason, now)
    moved = await rows.get_run(tx, run.id)
    assert moved is not None
    return moved


class _Trigger:
    """One write's claims of its trigger key, each attempt's marked with its own time: when an
    attempt's answer to COMMIT was lost, the retry finds the key claimed, and knows by the time that
    the claim was its own (a replay of the trigger is refused; this is not one)."""

    def __init__(self, key: str) -> None:
        self.key = key
        self._tried_at: set[float] = set()

    async def claim(self, tx: Tx, delivery_id: str, at: float) -> bool:
        self._tried_at.add(at)
        return await rows.claim_trigger(tx, self.key, delivery_id, at)

    async def lost_claim(self, tx: Tx) -> asyncpg.Record | None:
        """The trigger's row if an earlier attempt of this write claimed it."""
        found = await rows.trigger(tx, self.key) if self._tried_at else None
        return found if found is not None and found["created_at"] in self._tried_at else None
