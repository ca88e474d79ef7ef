"""Reads for the dashboard, the metrics and the operator's views, in PostgreSQL: the same answers
as ``bot.store.sqlite.views``, over the whole cluster's runs. Mixed into ``PostgresStore``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

from bot.store.model import COLUMN_FACETS, LIVE, TERMINAL, Census, Run, RunEvent, StateChange
from bot.store.postgres.connection import Connections

SETTLE = 5.0  # seconds after which a missing transition id is taken as never coming


class Views:
    _c: Connections

    async def history(self, run_id: int) -> list[StateChange]:
        """Every state change of a run, oldest first."""
        found = await self._c.read(
            "SELECT id, run_id, from_state, to_state, reason, at FROM transitions WHERE run_id = $1 ORDER BY id",
            run_id,
        )
        return [StateChange(*r) for r in found]

    async def queued(self, limit: int) -> list[Run]:
        """The head of the queue, in order."""
        found = await self._c.read("SELECT * FROM runs WHERE state = 'queued' ORDER BY id LIMIT $1", limit)
        return [Run.from_row(r) for r in found]

    async def reported_facets(self, run_ids: Iterable[int], facets: Iterable[str]) -> dict[int, dict[str, Any]]:
        """Some facets of what the reporter stored for each of several runs, in one query."""
        ids, names = list(run_ids), list(facets)
        assert not set(names) & set(COLUMN_FACETS), names
        found = await self._c.read(
            "SELECT run_id, facet, value FROM reported WHERE run_id = ANY($1::bigint[]) AND facet = ANY($2::text[])",
            ids, names,
        )
        facets_of: dict[int, dict[str, Any]] = {}
        for r in found:
            facets_of.setdefault(r["run_id"], {})[r["facet"]] = json.loads(r["value"])
        return facets_of

    async def recent_ended(self, limit: int) -> list[Run]:
        """The runs that most recently reached an outcome, newest first."""
        found = await self._c.read(
            "SELECT * FROM runs WHERE state = ANY($1::text[]) ORDER BY ended_at DESC, id DESC LIMIT $2",
            list(TERMINAL), limit,
        )
        return [Run.from_row(r) for r in found]

    async def census(self) -> Census:
        """Live runs per pool and state, and the backlogs: what the metrics report as gauges."""
        live = await self._c.read(
            "SELECT pool, state, count(*) FROM runs WHERE state = ANY($1::text[]) GROUP BY pool, state", list(LIVE)
        )
        [backlogs] = await self._c.read(
            "SELECT (SELECT count(*) FROM outbox WHERE done_at IS NULL),"
            " (SELECT count(*) FROM deliveries WHERE handled_at IS NULL)"
        )
        return Census({(pool, state): n for pool, state, n in live}, backlogs[0], backlogs[1])

    async def last_transition(self) -> tuple[float, int]:
        """``(at, id)`` of the newest state change, ``(0, 0)`` when there is none."""
        found = await self._c.read("SELECT at, id FROM transitions ORDER BY id DESC LIMIT 1")
        return (found[0]["at"], found[0]["id"]) if found else (0.0, 0)

    async def transitions_after(self, after: tuple[float, int], limit: int) -> list[RunEvent]:
        """State changes after ``after`` (the ``(at, id)`` of the last one read), oldest first.

        PostgreSQL never hands out an id twice, but several replicas write at once: ids are taken
        in one order and committed in another, so a change with a lower id may still be on its way
        when a higher one is read. The reader stops before a missing id while the change after it is
        younger than ``SETTLE`` seconds (every transaction of the store is far shorter); a gap older
        than that is an id no change will fill (a rollback, or history compacted away).
        Each change carries what the metrics need as of that change (see the SQLite store).
        """
        _, last_id = after
        found = await self._c.read(
            "SELECT t.id, t.to_state, t.at, r.agent,"
            " NOT EXISTS (SELECT 1 FROM transitions p WHERE p.run_id = t.run_id AND p.id < t.id"
            "             AND p.to_state = 'running'),"
            " (SELECT max(p.at) FROM transitions p WHERE p.run_id = t.run_id AND p.id < t.id"
            "  AND p.to_state = 'running'),"
            " COALESCE((SELECT min(d.received_at) FROM triggers g JOIN deliveries d ON d.id = g.delivery_id"
            "           WHERE g.run_id = t.run_id), r.created_at)"
            " FROM transitions t JOIN runs r ON r.id = t.run_id WHERE t.id > $1 ORDER BY t.id LIMIT $2",
            last_id, limit,
        )
        settled, expected = time.time() - SETTLE, last_id + 1
        events = []
        for r in found:
            if r[0] != expected and r[2] > settled:
                break
            events.append(RunEvent(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]))
            expected = r[0] + 1
        return events
