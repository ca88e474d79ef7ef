"""The SQLite schema as an append-only list of migrations; ``PRAGMA user_version`` counts those applied.

Append new steps at the end, never edit one that shipped: a database file opened by a newer bot
runs exactly the steps it has not seen. A step whose script starts with ``OUTSIDE_TRANSACTION``
runs statement by statement without one (``VACUUM`` cannot run inside a transaction); it must be
safe to repeat, since a crash before its number is recorded runs it again.
"""

from __future__ import annotations

import aiosqlite

OUTSIDE_TRANSACTION = "-- outside a transaction"

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
    # Retention: the reporter finds the runs it owes through a partial index instead of joining
    # all history, pruning finds old rows through indexes on their age, and the sweep and branch
    # assignment look at one workspace's or branch's runs, not the repository's whole history.
    """
    ALTER TABLE runs ADD COLUMN reported_version INTEGER NOT NULL DEFAULT 0;
    UPDATE runs SET reported_version = coalesce(
        (SELECT CAST(value AS INTEGER) FROM reported WHERE run_id = runs.id AND facet = 'version'), 0
    );
    DELETE FROM reported WHERE facet = 'version';
    CREATE INDEX runs_unreported ON runs (id) WHERE reported_version < version;
    CREATE INDEX runs_workspace ON runs (owner, repo, workspace_key);
    CREATE INDEX runs_branch ON runs (owner, repo, branch);
    CREATE INDEX deliveries_received ON deliveries (received_at);
    CREATE INDEX deliveries_with_body ON deliveries (received_at) WHERE length(body) > 0;
    CREATE INDEX triggers_created ON triggers (created_at);
    CREATE INDEX outbox_done ON outbox (done_at) WHERE done_at IS NOT NULL;
    CREATE INDEX outbox_run ON outbox (run_id);
    """,
    # Space that pruning frees goes back to the file system: auto_vacuum takes effect only once
    # VACUUM has rebuilt the file.
    f"""{OUTSIDE_TRANSACTION}
    PRAGMA auto_vacuum = INCREMENTAL;
    VACUUM;
    """,
    # What a dispatch through the admin API asked for: prompt options (template, plan_template, persona,
    # variables) and, on a branch without an issue, that branch (ref) and its head then (ref_sha).
    "ALTER TABLE runs ADD COLUMN options TEXT NOT NULL DEFAULT '{}'",
    # Replicas (one here; several on PostgreSQL, whose schema has the same): which claimed a run,
    # their heartbeats, and leases that keep a cluster-wide job or a run's reporting to one of them.
    """
    ALTER TABLE runs ADD COLUMN replica TEXT NOT NULL DEFAULT '';
    CREATE INDEX runs_replica ON runs (replica, state);
    CREATE TABLE replicas (
        id TEXT PRIMARY KEY,
        host TEXT NOT NULL,
        started_at REAL NOT NULL,
        seen_at REAL NOT NULL,
        max_running INTEGER NOT NULL,
        lost_at REAL
    );
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        until REAL NOT NULL
    );
    """,
    # What runs' model calls used (the gateway meters them): sums per run, UTC day and model
    # (``unpriced`` counts the calls with no price, whose cost is unknown), kept as long as the run's
    # row; and each run's last few actions, read from the model's tool calls.
    """
    CREATE TABLE usage (
        run_id INTEGER NOT NULL,
        day TEXT NOT NULL,
        model TEXT NOT NULL,
        calls INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cached_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        unpriced INTEGER NOT NULL DEFAULT 0,
        wait_seconds REAL NOT NULL DEFAULT 0,
        at REAL NOT NULL,
        PRIMARY KEY (run_id, day, model)
    );
    CREATE INDEX usage_day ON usage (day);
    CREATE INDEX usage_at ON usage (at);
    CREATE TABLE run_actions (
        run_id INTEGER PRIMARY KEY,
        actions TEXT NOT NULL
    );
    """,
]


async def migrate(db: aiosqlite.Connection) -> None:
    """Apply the steps this file has not seen, each in its own transaction unless it says otherwise."""
    (version,) = await (await db.execute("PRAGMA user_version")).fetchone()
    for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
        statements = [s for s in script.split(";") if s.strip()]
        if script.lstrip().startswith(OUTSIDE_TRANSACTION):
            for statement in statements:
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version={number}")
            continue
        await db.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version={number}")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        await db.execute("COMMIT")
