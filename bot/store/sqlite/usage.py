"""What runs' model calls used, in SQLite: sums per run, model and UTC day, and each run's last
few actions. Mixed into ``SqliteStore``; a write wakes the ``usage`` topic's subscribers."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from bot.store.model import USAGE_SUMS, ModelUsage, Usage, UsageTotal, kept_actions, usage_row, usage_totals, usages
from bot.store.sqlite.rows import Session, marks
from bot.store.sqlite.views import Views

_SUMS = ", ".join(f"SUM({c}) AS {c}" for c in USAGE_SUMS)
_ADD = ", ".join(f"{c} = usage.{c} + excluded.{c}" for c in USAGE_SUMS)


class UsageRecords(Views):
    _tx: Session

    async def add_usage(self, run_id: int, usage: ModelUsage, *, day: str, at: float,
                        actions: Sequence[str] = ()) -> None:
        """Add one model call's (or several calls') usage to the run's sums for ``day`` (UTC), and
        keep its last few ``actions``."""
        columns = ("run_id", "day", "model", *USAGE_SUMS, "at")
        async with self._tx("usage") as db:
            await db.execute(
                f"INSERT INTO usage ({', '.join(columns)}) VALUES ({marks(columns)})"
                f" ON CONFLICT (run_id, day, model) DO UPDATE SET {_ADD}, at = excluded.at",
                (run_id, day, usage.model, *usage_row(usage), at),
            )
            if actions:
                found = await db.execute_fetchall("SELECT actions FROM run_actions WHERE run_id = ?", (run_id,))
                kept = kept_actions(json.loads(found[0][0]) if found else [], actions)
                await db.execute(
                    "INSERT INTO run_actions (run_id, actions) VALUES (?, ?)"
                    " ON CONFLICT (run_id) DO UPDATE SET actions = excluded.actions",
                    (run_id, json.dumps(kept)),
                )

    async def usage(self, run_id: int) -> Usage:
        """What the run used so far, by model (all days together), and its last actions."""
        return (await self.usages([run_id])).get(run_id, Usage())

    async def usages(self, run_ids: Iterable[int]) -> dict[int, Usage]:
        """``usage`` of each of several runs that used anything, in two queries."""
        ids = tuple(run_ids)
        found = await self._all(
            f"SELECT run_id, model, {_SUMS} FROM usage WHERE run_id IN ({marks(ids)})"
            " GROUP BY run_id, model ORDER BY run_id, model", ids,
        )
        actions = await self._all(f"SELECT run_id, actions FROM run_actions WHERE run_id IN ({marks(ids)})", ids)
        return usages(found, actions)

    async def usage_totals(self, since: float) -> list[UsageTotal]:
        """Per repository and agent, what runs used on the days they called a model since ``since``
        (a run's sums for a day count once it called a model after ``since`` that day)."""
        return usage_totals(await self._all(
            f"SELECT r.owner, r.repo, r.agent, u.run_id, u.model, {_SUMS} FROM usage u JOIN runs r ON r.id = u.run_id"
            " WHERE u.at >= ? GROUP BY r.owner, r.repo, r.agent, u.run_id, u.model", (since,),
        ))

    async def spent(self, day: str, *, repo: str | None = None, pool: str | None = None) -> float:
        """USD spent on ``day`` (UTC), by every run or those of one repository (owner/name) or pool;
        calls with no price count nothing."""
        clauses, args = ["u.day = ?"], [day]
        if repo is not None:
            owner, _, name = repo.partition("/")
            clauses.append("r.owner = ? AND r.repo = ?")
            args += [owner, name]
        if pool is not None:
            clauses.append("r.pool = ?")
            args.append(pool)
        [row] = await self._all(
            f"SELECT COALESCE(SUM(u.cost_usd), 0.0) FROM usage u JOIN runs r ON r.id = u.run_id"
            f" WHERE {' AND '.join(clauses)}", args,
        )
        return row[0]
