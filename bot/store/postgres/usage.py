"""What runs' model calls used, in PostgreSQL: the same sums and actions as
``bot.store.sqlite.usage``. Mixed into ``PostgresStore``; a write wakes the ``usage`` topic's
subscribers on every replica."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from bot.store.model import USAGE_SUMS, ModelUsage, Usage, UsageTotal, kept_actions, usage_row, usage_totals, usages
from bot.store.postgres.connection import Connections
from bot.store.postgres.rows import Tx

_FLOATS = ("cost_usd", "wait_seconds")

# sum() of a BIGINT is a NUMERIC (a Decimal to asyncpg): counts are cast back.
_SUMS = ", ".join(f"sum({c}){'' if c in _FLOATS else '::bigint'} AS {c}" for c in USAGE_SUMS)
_ADD = ", ".join(f"{c} = usage.{c} + excluded.{c}" for c in USAGE_SUMS)
_COLUMNS = ("run_id", "day", "model", *USAGE_SUMS, "at")
_INSERT = (f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES ({', '.join(f'${n}' for n in range(1, len(_COLUMNS) + 1))})"
           f" ON CONFLICT (run_id, day, model) DO UPDATE SET {_ADD}, at = excluded.at")


class UsageRecords:
    _c: Connections

    async def add_usage(self, run_id: int, usage: ModelUsage, *, day: str, at: float,
                        actions: Sequence[str] = ()) -> None:
        """Add one model call's (or several calls') usage to the run's sums for ``day`` (UTC), and
        keep its last few ``actions`` (see ``SqliteStore.add_usage``)."""

        async def step(tx: Tx) -> None:
            await tx.execute(_INSERT, run_id, day, usage.model, *usage_row(usage), at)
            if actions:
                await tx.execute("INSERT INTO run_actions (run_id, actions) VALUES ($1, '[]')"
                                 " ON CONFLICT (run_id) DO NOTHING", run_id)
                old = await tx.fetchval("SELECT actions FROM run_actions WHERE run_id = $1 FOR UPDATE", run_id)
                await tx.execute("UPDATE run_actions SET actions = $2 WHERE run_id = $1",
                                 run_id, json.dumps(kept_actions(json.loads(old), actions)))

        await self._c.write(step, "usage")

    async def usage(self, run_id: int) -> Usage:
        """What the run used so far, by model (all days together), and its last actions."""
        return (await self.usages([run_id])).get(run_id, Usage())

    async def usages(self, run_ids: Iterable[int]) -> dict[int, Usage]:
        """``usage`` of each of several runs that used anything, in two queries."""
        ids = list(run_ids)
        found = await self._c.read(
            f"SELECT run_id, model, {_SUMS} FROM usage WHERE run_id = ANY($1::bigint[])"
            " GROUP BY run_id, model ORDER BY run_id, model", ids,
        )
        actions = await self._c.read("SELECT run_id, actions FROM run_actions WHERE run_id = ANY($1::bigint[])", ids)
        return usages(found, actions)

    async def usage_totals(self, since: float) -> list[UsageTotal]:
        """Per repository and agent, what runs used on the days they called a model since ``since``
        (see ``SqliteStore.usage_totals``)."""
        return usage_totals(await self._c.read(
            f"SELECT r.owner, r.repo, r.agent, u.run_id, u.model, {_SUMS} FROM usage u JOIN runs r ON r.id = u.run_id"
            " WHERE u.at >= $1 GROUP BY r.owner, r.repo, r.agent, u.run_id, u.model", since,
        ))

    async def spent(self, day: str, *, repo: str | None = None, pool: str | None = None) -> float:
        """USD spent on ``day`` (UTC), by every run or those of one repository (owner/name) or pool;
        calls with no price count nothing."""
        clauses, args = ["u.day = $1"], [day]
        if repo is not None:
            owner, _, name = repo.partition("/")
            args += [owner, name]
            clauses.append(f"r.owner = ${len(args) - 1} AND r.repo = ${len(args)}")
        if pool is not None:
            args.append(pool)
            clauses.append(f"r.pool = ${len(args)}")
        found = await self._c.read(
            f"SELECT coalesce(sum(u.cost_usd), 0.0) FROM usage u JOIN runs r ON r.id = u.run_id"
            f" WHERE {' AND '.join(clauses)}", *args,
        )
        return found[0][0]
