"""The SQLite backend: one file (WAL) that alone can rebuild the bot's state after a crash.

Every change is one transaction under one lock, so a claim, a transition or a request is atomic
with respect to every other coroutine; once it commits, subscribers hear which tables it touched.
Handlers and workers call these methods; nobody else writes SQL. Times are epoch seconds as
floats (SQLite 3.40 has no sub-second unixepoch).
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store import policy
from bot.store.model import ACTIVE, CANCELLABLE, COLUMN_FACETS, LIVE, STATES, OutboxItem, PoolState
from bot.store.model import Pruned, Run, RunRequest, allowed_from, utc_day
from bot.store.signals import Subscription
from bot.store.sqlite import retention, rows
from bot.store.sqlite.deliveries import DeliveryWriter
from bot.store.sqlite.rows import marks
from bot.store.sqlite.schema import migrate
from bot.store.replicas import ReplicaRules
from bot.store.sqlite.replicas import Replicas
from bot.store.sqlite.usage import UsageRecords

# What each repository and pool spent on one UTC day, for a claim under daily budgets.
SPENT = ("SELECT r.owner, r.repo, r.pool, SUM(u.cost_usd) FROM usage u JOIN runs r ON r.id = u.run_id"
         " WHERE u.day = ? GROUP BY r.owner, r.repo, r.pool")


async def _through(statement: Awaitable[Any]) -> None:
    """Await a statement that begins or ends a transaction to its end, even when the caller is
    cancelled meanwhile (the cancel is raised after). aiosqlite runs it whatever happens to its
    caller, so the connection's state is known only once it has run: a BEGIN left behind would make
    every later write fail, and keep them all uncommitted."""
    running = asyncio.ensure_future(statement)
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await asyncio.wait([running])
        raise


class SqliteStore(Replicas, UsageRecords, ReplicaRules):
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._deliveries = DeliveryWriter(self._tx)

    @classmethod
    async def open(cls, path: Path) -> SqliteStore:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def close(self) -> None:
        await self._deliveries.close()
        await self._db.close()

    def subscribe(self, *topics: str) -> Subscription:
        """Hear of every committed write to these tables ("runs", "outbox", "pools", "flags", ...)."""
        subscription = Subscription(topics)
        self._subscriptions.add(subscription)
        return subscription

    @asynccontextmanager
    async def _tx(self, *touched: str, atomic: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """The one way to write: under the lock, in one transaction (or, with ``atomic=False``,
        statements that each commit alone). Once committed, subscribers hear which tables it
        touched, if it changed any row: a claim that started nothing wakes nobody."""
        async with self._lock:
            before = self._db.total_changes
            if not atomic:
                yield self._db
            else:
                try:
                    await _through(self._db.execute("BEGIN IMMEDIATE"))
                    yield self._db
                except BaseException:
                    if self._db.in_transaction:
                        await _through(self._db.execute("ROLLBACK"))
                    raise
                await _through(self._db.execute("COMMIT"))
            changed = self._db.total_changes != before
        if changed:
            for subscription in list(self._subscriptions):
                subscription.notify(set(touched))

    async def ping(self) -> bool:
        return bool(await self._all("SELECT 1"))

    # Deliveries ---------------------------------------------------------------------------

    async def record_delivery(self, delivery_id: str, event_type: str, body: bytes) -> bool:
        """Store a delivery before it is acknowledged; False if its id was seen before.

        Deliveries that arrive together share one commit; each caller returns once its row is in.
        """
        return await self._deliveries.record(delivery_id, event_type, body)

    def finish_delivery(self, delivery_id: str, error: str | None = None) -> asyncio.Future[None]:
        """Mark handled, or count a failed attempt so a later pass retries it.

        Written with the next group commit; the returned future tells when. Losing it in a crash
        only means the delivery is handled again, which trigger keys make harmless.
        """
        return self._deliveries.finish(delivery_id, error)

    async def pending_deliveries(self, max_attempts: int = 10, limit: int = -1) -> list[tuple[str, str, bytes]]:
        """The oldest deliveries not yet handled that failed fewer than ``max_attempts`` times."""
        found = await self._all(
            "SELECT id, event_type, body FROM deliveries WHERE handled_at IS NULL AND attempts < ?"
            " ORDER BY received_at LIMIT ?",
            (max_attempts, limit),
        )
        return [(r["id"], r["event_type"], bytes(r["body"])) for r in found]

    # Runs ---------------------------------------------------------------------------------

    async def request_run(
        self, req: RunRequest, *, trigger_key: str, delivery_id: str = "", unless_active: bool = False
    ) -> Run | None:
        """Queue a run unless its trigger was seen before, or (labels) one is not over yet (live or blocked)."""
        async with self._tx("runs", "triggers", "transitions") as db:
            if unless_active:
                live = await (
                    await db.execute(
                        f"SELECT 1 FROM runs WHERE owner = ? AND repo = ? AND number = ? AND agent = ?"
                        f" AND state IN ({marks(CANCELLABLE)})",
                        (req.owner, req.repo, req.number, req.agent, *CANCELLABLE),
                    )
                ).fetchone()
                if live:
                    return None
            if not await rows.claim_trigger(db, trigger_key, delivery_id):
                return None
            now = time.time()
            values = {**req.__dict__, "workspace_key": req.workspace_key, "state": "queued"}
            values["options"] = json.dumps(req.options)
            values |= {"created_at": now, "updated_at": now}
            cur = await db.execute(
                f"INSERT INTO runs ({', '.join(values)}) VALUES ({marks(values)})", tuple(values.values())
            )
            run_id = cur.lastrowid
            await db.execute("UPDATE triggers SET run_id = ? WHERE key = ?", (run_id, trigger_key))
            await rows.log_transition(db, run_id, None, "queued", req.trigger, now)
            return await rows.get_run(db, run_id)

    async def get(self, run_id: int) -> Run | None:
        async with self._lock:
            return await rows.get_run(self._db, run_id)

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
            states = tuple(states)
            clauses.append(f"state IN ({marks(states)})")
            args += states
        for column, value in (("owner", owner), ("repo", repo), ("number", number), ("workspace_key", workspace_key)):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = " AND ".join(clauses) or "1"
        return [Run.from_row(r) for r in await self._all(f"SELECT * FROM runs WHERE {where} ORDER BY id", args)]

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
        """Move a run to ``to`` if the state machine allows it from its current state.

        ``expect`` narrows the allowed current states; ``changes`` are column updates made in the
        same transaction; ``trigger_key`` makes the move happen once per trigger (a command).
        Returns the new run, or None when the run had moved on (so a late completion or a
        double cancel has no effect).
        """
        assert to in STATES, to
        async with self._tx("runs", "triggers", "transitions") as db:
            run = await rows.get_run(db, run_id)
            if run is None or run.state not in allowed_from(to, expect):
                return None
            if trigger_key and not await rows.claim_trigger(db, trigger_key, ""):
                return None
            return await rows.move_run(db, run, to, reason, changes)

    async def cancel(self, run_ids: Iterable[int], *, reason: str, trigger_key: str) -> list[Run] | None:
        """Cancel those of the runs that still may be, once per trigger (a ``/cancel`` comment, a
        pull request's closing), in one transaction: None when the trigger was seen before, so a
        replay of it cancels nothing, not even runs queued since."""
        async with self._tx("runs", "triggers", "transitions") as db:
            if not await rows.claim_trigger(db, trigger_key, ""):
                return None
            cancelled = []
            for run_id in run_ids:
                run = await rows.get_run(db, run_id)
                if run is not None and run.state in allowed_from("cancelled"):
                    cancelled.append(await rows.move_run(db, run, "cancelled", reason, {}))
            return cancelled

    async def update(self, run_id: int, *, expect: Iterable[str] | None = None, **changes: Any) -> Run | None:
        """Change fields of a run without changing its state (branch, head sha, container id...);
        with ``expect``, only while it is in one of those states (else None)."""
        async with self._tx("runs") as db:
            if expect is not None:
                run = await rows.get_run(db, run_id)
                if run is None or run.state not in expect:
                    return None
            await rows.update_run(db, run_id, changes | {"updated_at": time.time()})
            return await rows.get_run(db, run_id)

    async def assign_branch(self, run_id: int, choices: Sequence[str]) -> Run:
        """Give an issue's run the first of ``choices`` that no run of another issue in the repo
        has, in one transaction, so two issues whose tasks read alike never share a branch. The
        last choice is taken when all are: it names the issue. Pull request runs work on their
        head branch and own none."""
        async with self._tx("runs") as db:
            run = await rows.get_run(db, run_id)
            assert run is not None and not run.is_pull, run
            for branch in choices:
                taken = await db.execute_fetchall(
                    "SELECT 1 FROM runs WHERE owner = ? AND repo = ? AND branch = ? AND is_pull = 0 AND number != ?"
                    " LIMIT 1",
                    (run.owner, run.repo, branch, run.number),
                )
                if not taken:
                    break
            await rows.update_run(db, run_id, {"branch": branch, "updated_at": time.time()})
            return await rows.get_run(db, run_id)

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
        """Atomically move as many queued runs to ``preparing`` as the limits allow, FIFO, none
        onto a ``held`` workspace (``policy.claimable`` decides which), for ``replica``: it owns
        them, and holds at most ``replica_max_running`` active runs. A ``daily`` budget spent on the
        UTC day of ``now`` keeps its repository's or pool's runs queued. A claim clears the reason,
        which said why the run waited."""
        now = time.time() if now is None else now
        async with self._tx("runs", "transitions", "pools") as db:
            if policy.is_frozen(await rows.flag(db, "frozen"), frozen):
                return []
            room = None
            if replica_max_running is not None:
                [(mine,)] = await db.execute_fetchall(
                    f"SELECT COUNT(*) FROM runs WHERE replica = ? AND state IN ({marks(ACTIVE)})", (replica, *ACTIVE)
                )
                room = replica_max_running - mine
            limits = policy.Limits(max_running, pool_limits, spawn_intervals, frozen_pools, room, daily)
            spent = policy.Spent.of(await db.execute_fetchall(SPENT, (utc_day(now),)) if daily is not None else [])
            # Only the live runs, and only the columns a decision needs.
            live = await db.execute_fetchall(
                f"SELECT {', '.join(policy.LiveRun._fields)} FROM runs WHERE state IN ({marks(LIVE)})", LIVE
            )
            pools = {p.name: p for p in await rows.pools(db)}
            claimed: list[Run] = []
            for run in policy.claimable([policy.LiveRun(*r) for r in live], pools, limits, now, held, spent):
                await rows.update_run(
                    db, run.id, {"state": "preparing", "reason": "", "updated_at": now, "attempts": run.attempts + 1,
                     "replica": replica}
                )
                await rows.log_transition(db, run.id, "queued", "preparing", "claimed", now)
                await db.execute(
                    "INSERT INTO pools (name, last_spawn_at) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET last_spawn_at = excluded.last_spawn_at",
                    (run.pool, now),
                )
                claimed.append(await rows.get_run(db, run.id))
            return claimed

    async def queue_position(self, run_id: int) -> int | None:
        """1-based position among queued runs, or None when not queued."""
        ids = [r["id"] for r in await self._all("SELECT id FROM runs WHERE state = 'queued' ORDER BY id")]
        return ids.index(run_id) + 1 if run_id in ids else None

    # Pools and flags ----------------------------------------------------------------------

    async def pool(self, name: str) -> PoolState:
        return next((p for p in await self.pools() if p.name == name), PoolState(name, None, 0.0, 0, 0.0))

    async def pools(self) -> list[PoolState]:
        async with self._lock:
            return await rows.pools(self._db)

    async def set_pool_frozen(self, name: str, frozen: bool | None) -> None:
        async with self._tx("pools") as db:
            await db.execute(
                "INSERT INTO pools (name, frozen) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET frozen = excluded.frozen",
                (name, frozen),
            )

    async def record_outcome(self, pool: str, *, quick_failure: bool, threshold: int, pause: float) -> float:
        """Count quick failures of a pool; at ``threshold`` pause it. Returns paused_until (0 if not)."""
        async with self._tx("pools") as db:
            await db.execute("INSERT OR IGNORE INTO pools (name) VALUES (?)", (pool,))
            if not quick_failure:
                await db.execute("UPDATE pools SET quick_failures = 0 WHERE name = ?", (pool,))
                return 0.0
            await db.execute("UPDATE pools SET quick_failures = quick_failures + 1 WHERE name = ?", (pool,))
            row = await (await db.execute("SELECT quick_failures FROM pools WHERE name = ?", (pool,))).fetchone()
            if row["quick_failures"] < threshold:
                return 0.0
            until = time.time() + pause
            await db.execute("UPDATE pools SET paused_until = ?, quick_failures = 0 WHERE name = ?", (until, pool))
            return until

    async def set_flag(self, key: str, value: str) -> None:
        async with self._tx("flags") as db:
            await db.execute(
                "INSERT INTO flags (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def flag(self, key: str) -> str | None:
        async with self._lock:
            return await rows.flag(self._db, key)

    # Outbox and reported state ------------------------------------------------------------

    async def enqueue(
        self, key: str, kind: str, owner: str, repo: str, number: int, payload: dict[str, Any],
        run_id: int | None = None,
    ) -> bool:
        """Queue one Forge write, once per key; False if that key was queued before."""
        async with self._tx("outbox") as db:
            now = time.time()
            cur = await db.execute(
                "INSERT OR IGNORE INTO outbox (key, kind, owner, repo, number, payload, run_id, next_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, kind, owner, repo, number, json.dumps(payload), run_id, now, now),
            )
            return cur.rowcount == 1

    async def due_outbox(self, now: float | None = None, limit: int = 200, per_issue: int = 10) -> list[OutboxItem]:
        """Due items, the oldest first, at most ``per_issue`` of each issue: one issue's backlog
        (a flood of replies) never keeps another issue's items from being delivered."""
        found = await self._all(
            "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY owner, repo, number ORDER BY id) AS nth"
            " FROM outbox WHERE done_at IS NULL AND next_at <= ?) WHERE nth <= ? ORDER BY id LIMIT ?",
            (time.time() if now is None else now, per_issue, limit),
        )
        return [rows.outbox_item(r) for r in found]

    async def outbox_item(self, item_id: int) -> OutboxItem | None:
        """A pending item as it is now, None once done: a reporter pass checks it before acting."""
        found = await self._all("SELECT * FROM outbox WHERE id = ? AND done_at IS NULL", (item_id,))
        return rows.outbox_item(found[0]) if found else None

    async def outbox_done(self, item_id: int, error: str = "", retry_at: float | None = None) -> None:
        """Finish an outbox item, or (with ``retry_at``) count a failure and try again then."""
        async with self._tx("outbox") as db:
            if retry_at is None:
                await db.execute("UPDATE outbox SET done_at = ?, error = ? WHERE id = ?", (time.time(), error, item_id))
            else:
                await db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = ?, error = ? WHERE id = ?",
                    (retry_at, error, item_id),
                )

    async def next_outbox_at(self, after: float = 0.0) -> float | None:
        """When the next pending item falls due, among those not due by ``after``."""
        found = await self._all("SELECT MIN(next_at) AS t FROM outbox WHERE done_at IS NULL AND next_at > ?", (after,))
        return found[0]["t"]

    async def runs_to_report(self) -> list[Run]:
        """Runs changed since the reporter last made the Forge show them (an index holds just those)."""
        return [Run.from_row(r) for r in await self._all("SELECT * FROM runs WHERE reported_version < version ORDER BY id")]

    async def reported(self, run_id: int) -> dict[str, Any]:
        found = await self._all("SELECT facet, value FROM reported WHERE run_id = ?", (run_id,))
        facets = {r["facet"]: json.loads(r["value"]) for r in found}
        columns = await self._all(f"SELECT {', '.join(COLUMN_FACETS.values())} FROM runs WHERE id = ?", (run_id,))
        for facet, column in COLUMN_FACETS.items():
            if columns and columns[0][column]:
                facets[facet] = columns[0][column]
        return facets

    async def set_reported(self, run_id: int, facet: str, value: Any) -> None:
        async with self._tx("reported") as db:
            if facet in COLUMN_FACETS:
                await db.execute(f"UPDATE runs SET {COLUMN_FACETS[facet]} = ? WHERE id = ?", (value, run_id))
                return
            await db.execute(
                "INSERT INTO reported (run_id, facet, value) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id, facet) DO UPDATE SET value = excluded.value",
                (run_id, facet, json.dumps(value)),
            )

    # Retention ----------------------------------------------------------------------------

    async def prune(self, *, bodies: float, deliveries: float, now: float | None = None) -> Pruned:
        """Forget what no one needs any more, then give the space back to the file system.

        Handled deliveries lose their body after ``bodies`` seconds. After ``deliveries`` seconds,
        as long as the Forge may redeliver, the delivery ids go, and with them the trigger keys and
        finished outbox items that deduplicate the effects of those deliveries.
        """
        now = time.time() if now is None else now
        before = dict.fromkeys(("deliveries", "triggers", "outbox"), now - deliveries) | {"bodies": now - bodies}
        return await retention.prune(self._tx, before)

    async def compact(self, owner: str, repo: str, workspace_key: str) -> int:
        """Once a workspace is swept, reduce its finished runs to their summary row; how many."""
        async with self._tx("runs", "transitions", "outbox", "reported") as db:
            return await retention.compact(db, owner, repo, workspace_key)

