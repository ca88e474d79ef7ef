"""Retention in PostgreSQL: the history a finished run or a handled delivery leaves behind, trimmed.

As in SQLite, each step removes at most ``BATCH`` rows per transaction, so a large backlog never
holds other writers up for long. Then ``VACUUM`` makes the freed space reusable and gives the
empty pages at the end of each table back to the file system (``Pruned.pages``).
"""

from __future__ import annotations

from bot.store.model import DROPPED_FACETS, DROPPED_RESULTS, TERMINAL, Pruned
from bot.store.postgres.connection import Connections
from bot.store.postgres.rows import Tx

BATCH = 5000
PAGE = 8192  # bytes; PostgreSQL's block size unless it was built otherwise

# What each pruning step removes: its table, and a statement over up to $2 rows older than $1.
PRUNE = {
    "bodies": ("deliveries", "UPDATE deliveries SET body = ''::bytea WHERE id IN (SELECT id FROM deliveries"
               " WHERE length(body) > 0 AND received_at < $1 AND handled_at IS NOT NULL LIMIT $2)"),
    "deliveries": ("deliveries", "DELETE FROM deliveries WHERE id IN"
                   " (SELECT id FROM deliveries WHERE received_at < $1 LIMIT $2)"),
    "triggers": ("triggers", "DELETE FROM triggers WHERE key IN (SELECT key FROM triggers WHERE created_at < $1 LIMIT $2)"),
    "outbox": ("outbox", "DELETE FROM outbox WHERE id IN"
               " (SELECT id FROM outbox WHERE done_at IS NOT NULL AND done_at < $1 LIMIT $2)"),
}
TABLES = ("deliveries", "triggers", "outbox")
SIZE = "SELECT sum(pg_total_relation_size(t::regclass)) FROM unnest($1::text[]) AS t"


async def prune(connections: Connections, before: dict[str, float]) -> Pruned:
    """Each kind of row older than its ``before`` time, removed a batch per transaction, then the
    tables vacuumed."""
    counts = {}
    for what, cutoff in before.items():
        table, statement = PRUNE[what]
        counts[what] = 0
        while True:
            count = await connections.write(lambda tx, s=statement, c=cutoff: tx.execute(s, c, BATCH), table)
            counts[what] += count
            if count < BATCH:
                break
    pages = 0
    if any(counts.values()):
        async def vacuum(db) -> int:
            size = await db.fetchval(SIZE, list(TABLES))
            await db.execute(f"VACUUM {', '.join(TABLES)}")  # outside a transaction, as it must be
            return (size - await db.fetchval(SIZE, list(TABLES))) // PAGE

        pages = await connections.retrying(vacuum)
    return Pruned(**counts, pages=max(pages, 0))


async def compact(tx: Tx, owner: str, repo: str, key: str) -> int:
    """Reduce the finished, fully reported runs of one workspace to a summary: their row in
    ``runs`` without the log tails."""
    found = await tx.fetch(
        "SELECT id FROM runs WHERE owner = $1 AND repo = $2 AND workspace_key = $3 AND state = ANY($4::text[])"
        " AND reported_version >= version",
        owner, repo, key, list(TERMINAL),
    )
    ids = [r["id"] for r in found]
    if ids:
        # Not a new version: the Forge already shows the run, and a summary changes nothing there.
        await tx.execute(
            "UPDATE runs SET result = (result::jsonb - $2::text[])::text WHERE id = ANY($1::bigint[])",
            ids, list(DROPPED_RESULTS),
        )
        await tx.execute("DELETE FROM transitions WHERE run_id = ANY($1::bigint[])", ids)
        await tx.execute("DELETE FROM outbox WHERE done_at IS NOT NULL AND run_id = ANY($1::bigint[])", ids)
        await tx.execute(
            "DELETE FROM reported WHERE run_id = ANY($1::bigint[]) AND facet = ANY($2::text[])",
            ids, list(DROPPED_FACETS),
        )
    return len(ids)
