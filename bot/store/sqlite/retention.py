"""Retention in SQLite: the history a finished run or a handled delivery leaves behind, trimmed.

Each step deletes at most ``BATCH`` rows, so the store can commit between steps and a large
backlog never holds the webhook's acknowledgements up for long.
"""

from __future__ import annotations

import aiosqlite

from bot.store.model import DROPPED_FACETS, DROPPED_RESULTS, TERMINAL, Pruned
from bot.store.sqlite.rows import Session, marks

BATCH = 5000
RESULT_PATHS = tuple(f"$.{key}" for key in DROPPED_RESULTS)  # json_remove's paths

# What each pruning step removes: its table, and a statement over up to ``BATCH`` rows older than ``?``.
PRUNE = {
    # Rewritten, not updated: a row that shrinks in place keeps its page to itself (a large body
    # had one), while a row written anew shares a page with its neighbours.
    "bodies": ("deliveries", "REPLACE INTO deliveries (id, event_type, body, received_at, handled_at, attempts, error)"
               " SELECT id, event_type, x'', received_at, handled_at, attempts, error FROM deliveries"
               " WHERE length(body) > 0 AND received_at < ? AND handled_at IS NOT NULL LIMIT ?"),
    "deliveries": ("deliveries", "DELETE FROM deliveries WHERE rowid IN"
                   " (SELECT rowid FROM deliveries WHERE received_at < ? LIMIT ?)"),
    "triggers": ("triggers", "DELETE FROM triggers WHERE rowid IN (SELECT rowid FROM triggers WHERE created_at < ? LIMIT ?)"),
    "outbox": ("outbox", "DELETE FROM outbox WHERE id IN"
               " (SELECT id FROM outbox WHERE done_at IS NOT NULL AND done_at < ? LIMIT ?)"),
}


async def prune(session: Session, before: dict[str, float]) -> Pruned:
    """Each kind of row older than its ``before`` time, removed a batch per transaction, then the
    freed pages given back."""
    counts = {}
    for what, cutoff in before.items():
        table, statement = PRUNE[what]
        counts[what] = 0
        while True:
            async with session(table) as db:
                count = (await db.execute(statement, (cutoff, BATCH))).rowcount
            counts[what] += count
            if count < BATCH:
                break
    async with session(atomic=False) as db:
        pages = await vacuum(db)
    return Pruned(**counts, pages=pages)


async def compact(db: aiosqlite.Connection, owner: str, repo: str, key: str) -> int:
    """Reduce the finished, fully reported runs of one workspace to a summary: their row in
    ``runs`` without the log tails."""
    rows = await db.execute_fetchall(
        f"SELECT id FROM runs WHERE owner = ? AND repo = ? AND workspace_key = ? AND state IN ({marks(TERMINAL)})"
        " AND reported_version >= version",
        (owner, repo, key, *TERMINAL),
    )
    ids = [r[0] for r in rows]
    if ids:
        # Not a new version: the Forge already shows the run, and a summary changes nothing there.
        await db.execute(
            f"UPDATE runs SET result = json_remove(result, {marks(RESULT_PATHS)}) WHERE id IN ({marks(ids)})",
            (*RESULT_PATHS, *ids),
        )
        await db.execute(f"DELETE FROM transitions WHERE run_id IN ({marks(ids)})", ids)
        await db.execute(f"DELETE FROM outbox WHERE done_at IS NOT NULL AND run_id IN ({marks(ids)})", ids)
        await db.execute(
            f"DELETE FROM reported WHERE run_id IN ({marks(ids)}) AND facet IN ({marks(DROPPED_FACETS)})",
            (*ids, *DROPPED_FACETS),
        )
    return len(ids)


async def vacuum(db: aiosqlite.Connection) -> int:
    """Give free pages back to the file system (outside a transaction); how many."""
    (free,) = await (await db.execute("PRAGMA freelist_count")).fetchone()
    # A script: each step of this pragma frees one page, and only a script steps it to the end.
    # The main file shrinks at the checkpoint.
    await db.executescript("PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);")
    return free
