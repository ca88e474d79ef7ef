"""``dispatchbot store copy``: an installation's SQLite store, copied into an empty PostgreSQL one.

So an installation that grows to several replicas keeps its history, its pending work and, above
all, its dedup keys (delivery ids, trigger keys, outbox keys): a redelivery of something the old
bot handled is still "already received". The copy is one PostgreSQL transaction: it lands whole or
not at all. Rows keep their ids; the id sequences go on after the highest.
"""

from __future__ import annotations

from pathlib import Path

import aiosqlite
import asyncpg

from bot.store.postgres import PostgresStore
from bot.store.sqlite import SqliteStore

# Every table of the store, parents before the rows that point at them.
TABLES = ("deliveries", "triggers", "runs", "transitions", "pools", "flags", "outbox", "reported", "replicas", "leases")
BATCH = 5000  # rows read and sent at a time


class CopyRefused(Exception):
    """The copy would mix two installations' state, or the two stores' schemas differ."""


async def copy_store(source: Path, target: str) -> dict[str, int]:
    """Copy every row of the SQLite store at ``source`` into the PostgreSQL database at ``target``;
    how many rows of each table."""
    await (await SqliteStore.open(source)).close()  # its schema brought up to this version
    await (await PostgresStore.open(target)).close()  # and the target's
    counts: dict[str, int] = {}
    async with aiosqlite.connect(source) as lite:
        pg = await asyncpg.connect(target)
        try:
            async with pg.transaction():
                for table in TABLES:
                    if await pg.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                        raise CopyRefused(f"the PostgreSQL store already holds {table}: copy only into an empty one")
                for table in TABLES:
                    counts[table] = await _copy_table(lite, pg, table)
                for table in ("runs", "transitions", "outbox"):
                    await pg.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false)"
                        f" FROM {table}"
                    )
        finally:
            await pg.close()
    return counts


async def _copy_table(lite: aiosqlite.Connection, pg: asyncpg.Connection, table: str) -> int:
    kinds = dict(await pg.fetch(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1"
        " AND table_schema = current_schema()", table,
    ))
    present = {row[1] for row in await lite.execute_fetchall(f"PRAGMA table_info({table})")}
    if set(kinds) != present:
        raise CopyRefused(f"{table}: the stores' columns differ ({sorted(set(kinds) ^ present)}): same bot version?")
    columns = sorted(kinds)
    booleans = [i for i, c in enumerate(columns) if kinds[c] == "boolean"]
    copied = 0
    async with lite.execute(f"SELECT {', '.join(columns)} FROM {table}") as cursor:
        while batch := await cursor.fetchmany(BATCH):
            records = [list(row) for row in batch]
            for record in records:
                for i in booleans:  # SQLite keeps booleans as 0/1
                    record[i] = None if record[i] is None else bool(record[i])
            await pg.copy_records_to_table(table, records=records, columns=columns)
            copied += len(records)
    return copied
