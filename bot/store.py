"""The store: one SQLite file (WAL) that alone can rebuild the bot's state after a crash.

Every change is one transaction under one lock, so a claim, a transition or a request is atomic
with respect to every other coroutine. Handlers and the runner call these methods; nobody else
writes SQL. Times are epoch seconds as floats (SQLite 3.40 has no sub-second unixepoch).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite

MAX_BATCH = 500  # deliveries written in one transaction at most
OUTCOME_DELAY = 0.1  # seconds outcomes of handled deliveries may wait behind arrivals

ACTIVE = ("preparing", "running", "qa", "harvesting")
WAITING = ("queued",)
LIVE = WAITING + ACTIVE
TERMINAL = ("completed", "failed", "blocked", "cancelled")
STATES = LIVE + TERMINAL

# Allowed transitions of the run state machine (blocked → queued is `/answer`); each is one transaction.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("preparing", "cancelled", "failed"),
    "preparing": ("running", "queued", "failed", "cancelled", "completed"),
    "running": ("qa", "harvesting", "completed", "failed", "blocked", "cancelled"),
    "qa": ("harvesting", "failed", "cancelled"),
    "harvesting": ("completed", "failed", "cancelled"),
    "blocked": ("queued", "cancelled"),
    "completed": (),
    "failed": (),
    "cancelled": (),
}

MIGRATIONS: list[str] = [
    """
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        event_type TEXT NOT NULL,
        body BLOB NOT NULL,
        received_at REAL NOT NULL,
        handled_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX deliveries_pending ON deliveries (received_at) WHERE handled_at IS NULL;
    CREATE TABLE triggers (
        key TEXT PRIMARY KEY,
        delivery_id TEXT,
        run_id INTEGER,
        created_at REAL NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        owner TEXT NOT NULL,
        repo TEXT NOT NULL,
        number INTEGER NOT NULL,
        is_pull INTEGER NOT NULL DEFAULT 0,
        agent TEXT NOT NULL,
        model TEXT NOT NULL DEFAULT '',
        pool TEXT NOT NULL,
        review INTEGER NOT NULL DEFAULT 0,
        task TEXT NOT NULL DEFAULT '',
        trigger TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        comment_id INTEGER,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        question TEXT NOT NULL DEFAULT '',
        answer TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        workspace_key TEXT NOT NULL,
        branch TEXT NOT NULL DEFAULT '',
        base_branch TEXT NOT NULL DEFAULT '',
        head_sha TEXT NOT NULL DEFAULT '',
        container_id TEXT NOT NULL DEFAULT '',
        exit_code INTEGER,
        result TEXT NOT NULL DEFAULT '{}',
        retry_of INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        version INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX runs_live ON runs (state, id);
    CREATE INDEX runs_issue ON runs (owner, repo, number);
    CREATE TABLE transitions (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL REFERENCES runs (id),
        from_state TEXT,
        to_state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        at REAL NOT NULL
    );
    CREATE INDEX transitions_run ON transitions (run_id, id);
    CREATE TABLE pools (
        name TEXT PRIMARY KEY,
        frozen INTEGER,
        paused_until REAL NOT NULL DEFAULT 0,
        quick_failures INTEGER NOT NULL DEFAULT 0,
        last_spawn_at REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE flags (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        owner TEXT NOT NULL,
        repo TEXT NOT NULL,
        number INTEGER NOT NULL,
        payload TEXT NOT NULL,
        run_id INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        done_at REAL,
        error TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL
    );
    CREATE INDEX outbox_pending ON outbox (next_at) WHERE done_at IS NULL;
    CREATE TABLE reported (
        run_id INTEGER NOT NULL,
        facet TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (run_id, facet)
    );
    """,
]


@dataclass(frozen=True)
class Run:
    id: int
    owner: str
    repo: str
    number: int
    is_pull: bool
    agent: str
    model: str
    pool: str
    review: bool
    task: str
    trigger: str
    requested_by: str
    comment_id: int | None
    state: str
    reason: str
    question: str
    answer: str
    attempts: int
    workspace_key: str
    branch: str
    base_branch: str
    head_sha: str
    container_id: str
    exit_code: int | None
    result: dict[str, Any]
    retry_of: int | None
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    version: int

    @property
    def agent_spec(self) -> str:
        return f"{self.agent}:{self.model}" if self.model else self.agent

    @property
    def full_repo(self) -> str:
        return f"{self.owner}/{self.repo}"

    @classmethod
    def draft(cls, req: RunRequest) -> Run:
        """A run that is never stored, for dry runs."""
        now = time.time()
        return cls(
            **req.__dict__, id=0, state="queued", reason="", question="", answer="", attempts=0,
            workspace_key=req.workspace_key, branch="", base_branch="", head_sha="", container_id="",
            exit_code=None, result={}, created_at=now, updated_at=now, started_at=None, ended_at=None, version=0,
        )

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> Run:
        data = dict(row)
        data["is_pull"] = bool(data["is_pull"])
        data["review"] = bool(data["review"])
        data["result"] = json.loads(data["result"])
        return cls(**data)


RUN_COLUMNS = tuple(f.name for f in fields(Run))


@dataclass(frozen=True)
class RunRequest:
    """What a handler asks for; the store turns it into a queued run."""

    owner: str
    repo: str
    number: int
    is_pull: bool
    agent: str
    model: str
    pool: str
    review: bool
    task: str
    trigger: str
    requested_by: str
    comment_id: int | None = None
    retry_of: int | None = None

    @property
    def workspace_key(self) -> str:
        return f"{'pr' if self.is_pull else 'issue'}-{self.number}"


class _Candidate(NamedTuple):
    """What ``claim`` needs to know of a live run."""

    id: int
    state: str
    pool: str
    owner: str
    repo: str
    workspace_key: str
    attempts: int


@dataclass(frozen=True)
class PoolState:
    name: str
    frozen: bool | None
    paused_until: float
    quick_failures: int
    last_spawn_at: float


@dataclass(frozen=True)
class OutboxItem:
    id: int
    key: str
    kind: str
    owner: str
    repo: str
    number: int
    payload: dict[str, Any]
    run_id: int | None
    attempts: int


class Store:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._lock = asyncio.Lock()
        self._arrivals: list[tuple[str, str, bytes, float, asyncio.Future[bool]]] = []
        self._finished: list[tuple[str, str | None, float, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._outcomes_due = 0.0

    @classmethod
    async def open(cls, path: Path) -> Store:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db)
            await store._migrate()
        except BaseException:
            await db.close()
            raise
        return store

    async def close(self) -> None:
        if self._writer:
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._db.close()

    async def _migrate(self) -> None:
        async with self._tx() as db:
            (version,) = await (await db.execute("PRAGMA user_version")).fetchone()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version={number}")

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _all(self, sql: str, args: Iterable[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            return list(await self._db.execute_fetchall(sql, tuple(args)))  # one trip to the thread

    async def ping(self) -> bool:
        return bool(await self._all("SELECT 1"))

    # Deliveries ---------------------------------------------------------------------------

    async def record_delivery(self, delivery_id: str, event_type: str, body: bytes) -> bool:
        """Store a delivery before it is acknowledged; False if its id was seen before.

        Deliveries that arrive together are written in one transaction (group commit): each
        caller still returns only once its row is committed, but a burst costs one commit.
        """
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._arrivals.append((delivery_id, event_type, body, time.time(), future))
        self._kick_writer()
        return await future

    def finish_delivery(self, delivery_id: str, error: str | None = None) -> asyncio.Future[None]:
        """Mark handled, or count a failed attempt so a later pass retries it.

        Written with the next group commit; the returned future tells when. Losing it in a crash
        only means the delivery is handled again, which trigger keys make harmless.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._finished.append((delivery_id, error, time.time(), future))
        self._kick_writer()
        return future

    def _kick_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_deliveries())

    async def _write_deliveries(self) -> None:
        """The group commit: every delivery that arrived or finished meanwhile, one statement each.

        Each statement is its own transaction (autocommit), so a batch costs one trip to the
        database thread rather than one per step. Arrivals go first: while acknowledgements keep
        waiting, outcomes are written at most every ``OUTCOME_DELAY``, and the intake, which waits
        for each outcome, slows down until the burst is over.
        """
        while self._arrivals or self._finished:
            if self._arrivals:
                batch, self._arrivals = self._arrivals[:MAX_BATCH], self._arrivals[MAX_BATCH:]
                await _settle([item[4] for item in batch], self._insert_new(batch))
                if self._arrivals and time.monotonic() < self._outcomes_due:
                    continue
            if self._finished:
                done, self._finished = self._finished[:MAX_BATCH], self._finished[MAX_BATCH:]
                await _settle([item[3] for item in done], self._record_outcomes(done))
                self._outcomes_due = time.monotonic() + OUTCOME_DELAY

    async def _insert_new(self, batch: list[tuple[str, str, bytes, float, Any]]) -> list[bool]:
        """Insert the deliveries not seen before (ids repeat on redelivery); which ones were new.

        One statement with no rows back (a ``RETURNING`` row costs a step, and each step takes
        the GIL again). Redeliveries are rare: only when fewer rows went in than the batch had is
        the table read back, and a row holding this batch's arrival time went in now.
        """
        ids = [item[0] for item in batch]
        async with self._lock:
            cursor = await self._db.execute(
                "INSERT INTO deliveries (id, event_type, body, received_at)"
                f" VALUES {', '.join(['(?, ?, ?, ?)'] * len(batch))} ON CONFLICT (id) DO NOTHING",
                [value for item in batch for value in item[:4]],
            )
            if cursor.rowcount == len(batch):
                return [True] * len(batch)
            rows = await self._db.execute_fetchall(
                f"SELECT id, received_at FROM deliveries WHERE id IN ({_marks(ids)})", ids
            )
        stored = dict(rows)
        fresh, seen = [], set()
        for delivery_id, _, _, at, _ in batch:
            fresh.append(delivery_id not in seen and stored.get(delivery_id) == at)
            seen.add(delivery_id)
        return fresh

    async def _record_outcomes(self, done: list[tuple[str, str | None, float, Any]]) -> list[None]:
        handled = [i for i, error, _, _ in done if error is None]
        failed = [(error, i) for i, error, _, _ in done if error is not None]
        if handled:
            await self._all(
                f"UPDATE deliveries SET handled_at = ? WHERE id IN ({_marks(handled)})", [done[-1][2], *handled]
            )
        if failed:
            async with self._tx() as db:
                await db.executemany("UPDATE deliveries SET attempts = attempts + 1, error = ? WHERE id = ?", failed)
        return [None] * len(done)

    async def pending_deliveries(self, max_attempts: int = 10, limit: int = -1) -> list[tuple[str, str, bytes]]:
        """The oldest deliveries not yet handled that failed fewer than ``max_attempts`` times."""
        rows = await self._all(
            "SELECT id, event_type, body FROM deliveries WHERE handled_at IS NULL AND attempts < ?"
            " ORDER BY received_at LIMIT ?",
            (max_attempts, limit),
        )
        return [(r["id"], r["event_type"], bytes(r["body"])) for r in rows]


    async def claim_trigger(self, key: str, delivery_id: str = "") -> bool:
        """Remember that ``key`` caused an effect; False if it already did (a redelivery)."""
        async with self._tx() as db:
            return await _claim_trigger(db, key, delivery_id)

    # Runs ---------------------------------------------------------------------------------

    async def request_run(
        self, req: RunRequest, *, trigger_key: str, delivery_id: str = "", unless_active: bool = False
    ) -> Run | None:
        """Queue a run unless its trigger was seen before, or (labels) one is already live."""
        async with self._tx() as db:
            if unless_active:
                live = await (
                    await db.execute(
                        f"SELECT 1 FROM runs WHERE owner = ? AND repo = ? AND number = ? AND agent = ?"
                        f" AND state IN ({_marks(LIVE + ('blocked',))})",
                        (req.owner, req.repo, req.number, req.agent, *LIVE, "blocked"),
                    )
                ).fetchone()
                if live:
                    return None
            if not await _claim_trigger(db, trigger_key, delivery_id):
                return None
            now = time.time()
            values = {**req.__dict__, "workspace_key": req.workspace_key, "state": "queued"}
            values |= {"created_at": now, "updated_at": now}
            cur = await db.execute(
                f"INSERT INTO runs ({', '.join(values)}) VALUES ({_marks(values)})", tuple(values.values())
            )
            run_id = cur.lastrowid
            await db.execute("UPDATE triggers SET run_id = ? WHERE key = ?", (run_id, trigger_key))
            await _log_transition(db, run_id, None, "queued", req.trigger, now)
            return await _get(db, run_id)

    async def get(self, run_id: int) -> Run | None:
        async with self._lock:
            return await _get(self._db, run_id)

    async def runs(
        self,
        *,
        states: Iterable[str] | None = None,
        owner: str | None = None,
        repo: str | None = None,
        number: int | None = None,
    ) -> list[Run]:
        clauses, args = [], []
        if states is not None:
            states = tuple(states)
            clauses.append(f"state IN ({_marks(states)})")
            args += states
        for column, value in (("owner", owner), ("repo", repo), ("number", number)):
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
        async with self._tx() as db:
            run = await _get(db, run_id)
            allowed = {s for s, targets in TRANSITIONS.items() if to in targets}
            if expect is not None:
                allowed &= set(expect)
            if run is None or run.state not in allowed:
                return None
            if trigger_key and not await _claim_trigger(db, trigger_key, ""):
                return None
            now = time.time()
            changes |= {"state": to, "updated_at": now}
            if to in TERMINAL:
                changes.setdefault("ended_at", now)
            if to in TERMINAL or to == "queued":
                changes.setdefault("container_id", "")
            if reason:
                changes["reason"] = reason
            await _update(db, run_id, changes)
            await _log_transition(db, run_id, run.state, to, reason, now)
            return await _get(db, run_id)

    async def update(self, run_id: int, **changes: Any) -> Run | None:
        """Change fields of a run without changing its state (branch, head sha, container id...)."""
        async with self._tx() as db:
            await _update(db, run_id, changes | {"updated_at": time.time()})
            return await _get(db, run_id)

    async def assign_branch(self, run_id: int, choices: Sequence[str]) -> Run:
        """Give an issue's run the first of ``choices`` that no run of another issue in the repo
        has, in one transaction, so two issues whose tasks read alike never share a branch. The
        last choice is taken when all are: it names the issue. Pull request runs work on their
        head branch and own none."""
        async with self._tx() as db:
            run = await _get(db, run_id)
            assert run is not None and not run.is_pull, run
            for branch in choices:
                taken = await db.execute_fetchall(
                    "SELECT 1 FROM runs WHERE owner = ? AND repo = ? AND branch = ? AND is_pull = 0 AND number != ?"
                    " LIMIT 1",
                    (run.owner, run.repo, branch, run.number),
                )
                if not taken:
                    break
            await _update(db, run_id, {"branch": branch, "updated_at": time.time()})
            return await _get(db, run_id)

    async def transitions(self, run_id: int) -> list[tuple[str | None, str, str]]:
        rows = await self._all(
            "SELECT from_state, to_state, reason FROM transitions WHERE run_id = ? ORDER BY id", (run_id,)
        )
        return [(r["from_state"], r["to_state"], r["reason"]) for r in rows]

    async def claim(
        self,
        *,
        max_running: int,
        pool_limits: dict[str, int],
        spawn_intervals: dict[str, float],
        frozen: bool = False,
        frozen_pools: frozenset[str] = frozenset(),
        now: float | None = None,
    ) -> list[Run]:
        """Atomically move as many queued runs to ``preparing`` as the limits allow, FIFO.

        A run waits while its pool is frozen, paused (backoff), inside its spawn interval, full,
        or while another live run holds the same workspace. One waiting pool never holds up the
        others. This single transaction is what makes N simultaneous requests start exactly L.
        """
        now = time.time() if now is None else now
        async with self._tx() as db:
            if _frozen(await _flag(db, "frozen"), frozen):
                return []
            # Only the columns a decision needs: a deep queue must not cost a Run object per row.
            columns = "id, state, pool, owner, repo, workspace_key, attempts"
            rows = await (
                await db.execute(f"SELECT {columns} FROM runs WHERE state IN ({_marks(LIVE)}) ORDER BY id", LIVE)
            ).fetchall()
            active = [r for r in rows if r["state"] in ACTIVE]
            per_pool: dict[str, int] = {}
            busy = {(r["owner"], r["repo"], r["workspace_key"]) for r in active}
            for r in active:
                per_pool[r["pool"]] = per_pool.get(r["pool"], 0) + 1
            pools = {p.name: p for p in await _pools(db)}
            total = len(active)
            claimed: list[Run] = []
            spawned: set[str] = set()
            for run in (_Candidate(*r) for r in rows if r["state"] == "queued"):
                if total >= max_running:
                    break
                pool = pools.get(run.pool)
                if _frozen(pool and pool.frozen, run.pool in frozen_pools) or (pool and pool.paused_until > now):
                    continue
                interval = spawn_intervals.get(run.pool, 0.0)
                if run.pool in spawned and interval > 0:
                    continue
                if pool and interval > 0 and now - pool.last_spawn_at < interval:
                    continue
                if per_pool.get(run.pool, 0) >= pool_limits.get(run.pool, max_running):
                    continue
                key = (run.owner, run.repo, run.workspace_key)
                if key in busy:
                    continue
                busy.add(key)
                per_pool[run.pool] = per_pool.get(run.pool, 0) + 1
                total += 1
                spawned.add(run.pool)
                await _update(db, run.id, {"state": "preparing", "updated_at": now, "attempts": run.attempts + 1})
                await _log_transition(db, run.id, "queued", "preparing", "claimed", now)
                await db.execute(
                    "INSERT INTO pools (name, last_spawn_at) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET last_spawn_at = excluded.last_spawn_at",
                    (run.pool, now),
                )
                claimed.append(await _get(db, run.id))
            return claimed

    async def queue_position(self, run_id: int) -> int | None:
        """1-based position among queued runs, or None when not queued."""
        rows = await self._all("SELECT id FROM runs WHERE state = 'queued' ORDER BY id")
        ids = [r["id"] for r in rows]
        return ids.index(run_id) + 1 if run_id in ids else None

    # Pools and flags ----------------------------------------------------------------------

    async def pool(self, name: str) -> PoolState:
        async with self._lock:
            pools = {p.name: p for p in await _pools(self._db)}
        return pools.get(name, PoolState(name, None, 0.0, 0, 0.0))

    async def pools(self) -> list[PoolState]:
        async with self._lock:
            return await _pools(self._db)

    async def set_pool_frozen(self, name: str, frozen: bool | None) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO pools (name, frozen) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET frozen = excluded.frozen",
                (name, frozen),
            )

    async def record_outcome(self, pool: str, *, quick_failure: bool, threshold: int, pause: float) -> float:
        """Count quick failures of a pool; at ``threshold`` pause it. Returns paused_until (0 if not)."""
        async with self._tx() as db:
            await db.execute("INSERT OR IGNORE INTO pools (name) VALUES (?)", (pool,))
            if not quick_failure:
                await db.execute("UPDATE pools SET quick_failures = 0 WHERE name = ?", (pool,))
                return 0.0
            await db.execute("UPDATE pools SET quick_failures = quick_failures + 1 WHERE name = ?", (pool,))
            row = await (await db.execute("SELECT quick_failures FROM pools WHERE name = ?", (pool,))).fetchone()
            if row["quick_failures"] < threshold:
                return 0.0
            until = time.time() + pause
            await db.execute(
                "UPDATE pools SET paused_until = ?, quick_failures = 0 WHERE name = ?", (until, pool)
            )
            return until

    async def set_flag(self, key: str, value: str) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO flags (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def flag(self, key: str) -> str | None:
        async with self._lock:
            return await _flag(self._db, key)

    # Outbox and reported state ------------------------------------------------------------

    async def enqueue(
        self, key: str, kind: str, owner: str, repo: str, number: int, payload: dict[str, Any],
        run_id: int | None = None,
    ) -> bool:
        """Queue one Forge write, once per key; False if that key was queued before."""
        async with self._tx() as db:
            now = time.time()
            cur = await db.execute(
                "INSERT OR IGNORE INTO outbox (key, kind, owner, repo, number, payload, run_id, next_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (key, kind, owner, repo, number, json.dumps(payload), run_id, now, now),
            )
            return cur.rowcount == 1

    async def due_outbox(self, now: float | None = None, limit: int = 50) -> list[OutboxItem]:
        rows = await self._all(
            "SELECT * FROM outbox WHERE done_at IS NULL AND next_at <= ? ORDER BY id LIMIT ?",
            (time.time() if now is None else now, limit),
        )
        return [_outbox_item(r) for r in rows]

    async def outbox_item(self, item_id: int) -> OutboxItem | None:
        """A pending item as it is now, None once done: a reporter pass checks it before acting."""
        rows = await self._all("SELECT * FROM outbox WHERE id = ? AND done_at IS NULL", (item_id,))
        return _outbox_item(rows[0]) if rows else None

    async def outbox_done(self, item_id: int, error: str = "", retry_at: float | None = None) -> None:
        """Finish an outbox item, or (with ``retry_at``) count a failure and try again then."""
        async with self._tx() as db:
            if retry_at is None:
                await db.execute("UPDATE outbox SET done_at = ?, error = ? WHERE id = ?", (time.time(), error, item_id))
            else:
                await db.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_at = ?, error = ? WHERE id = ?",
                    (retry_at, error, item_id),
                )

    async def next_outbox_at(self) -> float | None:
        rows = await self._all("SELECT MIN(next_at) AS t FROM outbox WHERE done_at IS NULL")
        return rows[0]["t"]

    async def runs_to_report(self) -> list[Run]:
        """Runs changed since the reporter last made the Forge show them."""
        rows = await self._all(
            "SELECT runs.* FROM runs LEFT JOIN reported ON reported.run_id = runs.id AND reported.facet = 'version'"
            " WHERE reported.value IS NULL OR CAST(reported.value AS INTEGER) < runs.version ORDER BY runs.id"
        )
        return [Run.from_row(r) for r in rows]

    async def reported(self, run_id: int) -> dict[str, Any]:
        rows = await self._all("SELECT facet, value FROM reported WHERE run_id = ?", (run_id,))
        return {r["facet"]: json.loads(r["value"]) for r in rows}

    async def set_reported(self, run_id: int, facet: str, value: Any) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO reported (run_id, facet, value) VALUES (?, ?, ?)"
                " ON CONFLICT (run_id, facet) DO UPDATE SET value = excluded.value",
                (run_id, facet, json.dumps(value)),
            )

    # Reads for the dashboard and the metrics ------------------------------------------------

    async def history(self, run_id: int) -> list[Transition]:
        """Every state change of a run, oldest first."""
        rows = await self._all(
            "SELECT id, run_id, from_state, to_state, reason, at FROM transitions WHERE run_id = ? ORDER BY id",
            (run_id,),
        )
        return [Transition(*r) for r in rows]

    async def queued(self, limit: int) -> list[Run]:
        """The head of the queue, in order."""
        rows = await self._all("SELECT * FROM runs WHERE state = 'queued' ORDER BY id LIMIT ?", (limit,))
        return [Run.from_row(r) for r in rows]

    async def reported_facets(self, run_ids: Iterable[int], facets: Iterable[str]) -> dict[int, dict[str, Any]]:
        """Some facets of what the reporter stored for each of several runs, in one query."""
        ids, names = tuple(run_ids), tuple(facets)
        rows = await self._all(
            f"SELECT run_id, facet, value FROM reported WHERE run_id IN ({_marks(ids)}) AND facet IN ({_marks(names)})",
            (*ids, *names),
        )
        found: dict[int, dict[str, Any]] = {}
        for r in rows:
            found.setdefault(r["run_id"], {})[r["facet"]] = json.loads(r["value"])
        return found

    async def recent_ended(self, limit: int) -> list[Run]:
        """The runs that most recently reached an outcome, newest first."""
        rows = await self._all(
            f"SELECT * FROM runs WHERE state IN ({_marks(TERMINAL)}) ORDER BY ended_at DESC, id DESC LIMIT ?",
            (*TERMINAL, limit),
        )
        return [Run.from_row(r) for r in rows]

    async def census(self) -> Census:
        """Live runs per pool and state, and the backlogs: what the metrics report as gauges."""
        async with self._lock:
            live = await self._db.execute_fetchall(
                f"SELECT pool, state, COUNT(*) FROM runs WHERE state IN ({_marks(LIVE)}) GROUP BY pool, state", LIVE
            )
            outbox = await self._db.execute_fetchall("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL")
            deliveries = await self._db.execute_fetchall("SELECT COUNT(*) FROM deliveries WHERE handled_at IS NULL")
        return Census({(pool, state): n for pool, state, n in live}, outbox[0][0], deliveries[0][0])

    async def last_transition_id(self) -> int:
        rows = await self._all("SELECT COALESCE(MAX(id), 0) FROM transitions")
        return rows[0][0]

    async def transitions_after(self, after_id: int, limit: int) -> list[RunEvent]:
        """State changes after ``after_id``, oldest first, with what the metrics need to know of each.

        Everything is as of the change itself, read from the log, so a late reader counts a run
        that has since gone on (blocked, answered, started again) the same as an early one.
        """
        rows = await self._all(
            "SELECT t.id, t.to_state, t.at, r.agent,"
            " NOT EXISTS (SELECT 1 FROM transitions p WHERE p.run_id = t.run_id AND p.id < t.id"
            "             AND p.to_state = 'running'),"
            " (SELECT MAX(p.at) FROM transitions p WHERE p.run_id = t.run_id AND p.id < t.id"
            "  AND p.to_state = 'running'),"
            " COALESCE((SELECT MIN(d.received_at) FROM triggers g JOIN deliveries d ON d.id = g.delivery_id"
            "           WHERE g.run_id = t.run_id), r.created_at)"
            " FROM transitions t JOIN runs r ON r.id = t.run_id WHERE t.id > ? ORDER BY t.id LIMIT ?",
            (after_id, limit),
        )
        return [RunEvent(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]) for r in rows]


class Transition(NamedTuple):
    id: int
    run_id: int
    from_state: str | None
    to_state: str
    reason: str
    at: float


class RunEvent(NamedTuple):
    """A state change as the metrics see it."""

    id: int
    to_state: str
    at: float
    agent: str
    first_start: bool  # the run never ran before this change
    running_since: float | None  # when the run last started running before this change
    requested_at: float  # arrival of the delivery that asked for the run, else the run's creation


class Census(NamedTuple):
    live: dict[tuple[str, str], int]  # (pool, state) -> runs
    outbox: int  # Forge writes not yet done
    deliveries: int  # deliveries not yet handled


async def _settle(futures: list[asyncio.Future[Any]], work: Awaitable[list[Any]]) -> None:
    """Give each waiting caller its result, or the error of the write they waited for."""
    try:
        results = await work
    except Exception as e:
        for future in futures:
            if not future.done():
                future.set_exception(e)
    else:
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)


def _outbox_item(r: aiosqlite.Row) -> OutboxItem:
    return OutboxItem(
        r["id"], r["key"], r["kind"], r["owner"], r["repo"], r["number"], json.loads(r["payload"]), r["run_id"],
        r["attempts"],
    )


def _frozen(runtime: str | bool | None, configured: bool) -> bool:
    """A frozen switch set at run time wins over the one from config."""
    if runtime is None:
        return configured
    return runtime in (True, "1")


def _marks(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


async def _get(db: aiosqlite.Connection, run_id: int) -> Run | None:
    row = await (await db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))).fetchone()
    return Run.from_row(row) if row else None


async def _update(db: aiosqlite.Connection, run_id: int, changes: dict[str, Any]) -> None:
    unknown = set(changes) - set(RUN_COLUMNS)
    assert not unknown, unknown
    if "result" in changes:
        changes["result"] = json.dumps(changes["result"])
    assignments = ", ".join(f"{column} = ?" for column in changes)
    await db.execute(
        f"UPDATE runs SET {assignments}, version = version + 1 WHERE id = ?", (*changes.values(), run_id)
    )


async def _log_transition(
    db: aiosqlite.Connection, run_id: int, from_state: str | None, to_state: str, reason: str, at: float
) -> None:
    await db.execute(
        "INSERT INTO transitions (run_id, from_state, to_state, reason, at) VALUES (?, ?, ?, ?, ?)",
        (run_id, from_state, to_state, reason, at),
    )


async def _claim_trigger(db: aiosqlite.Connection, key: str, delivery_id: str) -> bool:
    cur = await db.execute(
        "INSERT OR IGNORE INTO triggers (key, delivery_id, created_at) VALUES (?, ?, ?)",
        (key, delivery_id, time.time()),
    )
    return cur.rowcount == 1


async def _pools(db: aiosqlite.Connection) -> list[PoolState]:
    rows = await (await db.execute("SELECT * FROM pools ORDER BY name")).fetchall()
    return [
        PoolState(
            r["name"], None if r["frozen"] is None else bool(r["frozen"]),
            r["paused_until"], r["quick_failures"], r["last_spawn_at"],
        )
        for r in rows
    ]


async def _flag(db: aiosqlite.Connection, key: str) -> str | None:
    row = await (await db.execute("SELECT value FROM flags WHERE key = ?", (key,))).fetchone()
    return row["value"] if row else None
