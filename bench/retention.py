"""Benchmark of the store's retention: does the store stay flat as its history grows?

Two SQLite files get the same recent traffic: 1,000 runs finished in the last day, 10 deliveries
each (1 KiB bodies), with their transitions, trigger keys, done outbox items and reported facets,
and a few live runs. The big file also has the history of a long-running bot: 99,000 more runs
and 990,000 more deliveries from 31 to 400 days ago, so it holds 100,000 runs and 1,000,000
deliveries in all. Histories are written fast (``executemany`` in one transaction), then the
store does what the bot's jobs do: the sweep compacts each old run's workspace
(``Store.compact``), the retention job prunes with the default ages (``Store.prune``).

The figures, for each file: its size before and after, and the median time of the store queries
a reporter pass makes (``due_outbox``, ``runs_to_report``, ``next_outbox_at``) and of a claim
(``Store.claim``: 10 queued runs in a frozen pool, so every call decides and none claims). For
contrast, the reporter's query as it was before (a join over all history) on the same file.

    .venv/bin/python bench/retention.py
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bot.settings import Retention  # noqa: E402
from bot.store import LIVE, RunRequest, SqliteStore  # noqa: E402

DAY = 86400.0
RECENT_RUNS = 1_000
DELIVERIES_PER_RUN = 10
BODY = b"x" * 1024
LOG_TAIL = "a log line of the agent\n" * 160  # ~4,000 characters, as logs.tail keeps
COMMENT = "status comment text " * 75  # ~1,500 characters
REPEAT = 200  # timed calls of each measured query
CLAIM_QUERY = f"SELECT id, state, pool FROM runs WHERE state IN ({', '.join('?' * len(LIVE))})"
OLD_REPORTER_QUERY = (
    "SELECT runs.* FROM runs LEFT JOIN reported ON reported.run_id = runs.id AND reported.facet = 'version'"
    " WHERE reported.value IS NULL OR CAST(reported.value AS INTEGER) < runs.version ORDER BY runs.id"
)


def write_history(path: Path, runs: range, first_delivery: int, deliveries: int, start: float, end: float) -> None:
    """Finished, reported runs and handled deliveries spread evenly from ``start`` to ``end``."""
    step = (end - start) / max(len(runs), 1)
    run_rows, transitions, triggers, outbox, facets = [], [], [], [], []
    for i, run_id in enumerate(runs):
        at = start + i * step
        result = json.dumps({"log_tail": LOG_TAIL, "pushed": True, "commits": ["0123456789 feat: a change"]})
        run_rows.append((
            run_id, "acme", "widgets", run_id, 0, "codex", "", "codex", 0, f"fix issue {run_id}", "comment", "bob",
            "completed", f"issue-{run_id}", f"agent/fix-issue-{run_id}", "main", "f" * 40, 0, result,
            at, at + 300, at + 10, at + 300, 9, 9,
        ))
        transitions += [(run_id, a, b, "", at) for a, b in
                        ((None, "queued"), ("queued", "preparing"), ("preparing", "running"), ("running", "completed"))]
        triggers.append((f"comment:{run_id}:0", f"d{first_delivery + i * DELIVERIES_PER_RUN}", run_id, at))
        outbox += [(f"{kind}:{run_id}", kind, "acme", "widgets", run_id, "{}", at, at, at) for kind in ("reaction", "reply")]
        facets += [(run_id, facet, json.dumps(value)) for facet, value in (
            ("comment_id", run_id), ("comment_url", f"http://forge/acme/widgets/issues/{run_id}#c"),
            ("comment_body", COMMENT), ("state_label", "dispatch/done"), ("stopwatch", ["stopped", at + 10]),
            ("status", ["f" * 40, "completed"]),
        )]
    step = (end - start) / max(deliveries, 1)
    delivery_rows = (
        (f"d{first_delivery + n}", "issue_comment", BODY, start + n * step, start + n * step + 1)
        for n in range(deliveries)
    )
    with closing(sqlite3.connect(path)) as db, db:
        db.executemany(
            "INSERT INTO runs (id, owner, repo, number, is_pull, agent, model, pool, review, task, trigger,"
            " requested_by, state, workspace_key, branch, base_branch, head_sha, exit_code, result, created_at,"
            " updated_at, started_at, ended_at, version, reported_version)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            run_rows,
        )
        db.executemany("INSERT INTO transitions (run_id, from_state, to_state, reason, at) VALUES (?, ?, ?, ?, ?)",
                       transitions)
        db.executemany("INSERT INTO triggers (key, delivery_id, run_id, created_at) VALUES (?, ?, ?, ?)", triggers)
        db.executemany(
            "INSERT INTO outbox (key, kind, owner, repo, number, payload, next_at, done_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            outbox,
        )
        db.executemany("INSERT INTO reported (run_id, facet, value) VALUES (?, ?, ?)", facets)
        db.executemany("INSERT INTO deliveries (id, event_type, body, received_at, handled_at) VALUES (?, ?, ?, ?, ?)",
                       delivery_rows)


def size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def median_ms(call: Callable[[], Awaitable[object]]) -> float:
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


async def scenario(workdir: Path, total_runs: int) -> dict[str, float]:
    path = workdir / f"runs-{total_runs}.sqlite3"
    now = time.time()
    old = total_runs - RECENT_RUNS
    store = await SqliteStore.open(path)  # the schema, then the history written beside the store
    await store.close()
    start = time.perf_counter()
    write_history(path, range(1, old + 1), 0, old * DELIVERIES_PER_RUN, now - 400 * DAY, now - 31 * DAY)
    write_history(path, range(old + 1, total_runs + 1), old * DELIVERIES_PER_RUN, RECENT_RUNS * DELIVERIES_PER_RUN,
                  now - 0.8 * DAY, now - 600)
    figures = {"write s": time.perf_counter() - start, "size before MB": size(path) / 1e6}
    store = await SqliteStore.open(path)
    try:
        for n in range(10):  # live runs: 10 running, 10 queued in a pool the claims find frozen
            for pool in ("claude", "codex"):
                req = RunRequest("acme", "gadgets", 100 * n + (pool == "codex"), False, pool, "", pool, False,
                                 "live", "comment", "bob")
                run = await store.request_run(req, trigger_key=f"live:{pool}:{n}")
                if pool == "claude":
                    await store.claim(max_running=100, pool_limits={}, spawn_intervals={}, frozen_pools=frozenset({"codex"}))
                    await store.transition(run.id, "running", expect=("preparing",))
        start = time.perf_counter()
        for run_id in range(1, old + 1):  # each old run's workspace was swept
            await store.compact("acme", "widgets", f"issue-{run_id}")
        figures["compact s"] = time.perf_counter() - start
        start = time.perf_counter()
        ages = Retention()
        pruned = await store.prune(bodies=ages.bodies, deliveries=ages.deliveries)
        figures["prune s"] = time.perf_counter() - start
        figures["size after MB"] = size(path) / 1e6
        assert pruned.deliveries == old * DELIVERIES_PER_RUN, pruned

        async def reporter_pass() -> None:
            await store.due_outbox()
            await store.runs_to_report()
            await store.next_outbox_at()

        async def claim() -> None:
            assert not await store.claim(max_running=100, pool_limits={}, spawn_intervals={},
                                         frozen_pools=frozenset({"codex"}))

        figures["reporter pass ms"] = await median_ms(reporter_pass)
        figures["claim ms"] = await median_ms(claim)
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as db:
        if total_runs > RECENT_RUNS:
            for sql in ("SELECT * FROM runs WHERE reported_version < version ORDER BY id", CLAIM_QUERY):
                plan = "; ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, LIVE if "?" in sql else ()))
                print(f"  plan of {sql[:60]}...: {plan}")
        start = time.perf_counter()
        for _ in range(5):
            db.execute(OLD_REPORTER_QUERY).fetchall()
        figures["old reporter query ms"] = (time.perf_counter() - start) / 5 * 1000
    return figures


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        results = {}
        for total in (RECENT_RUNS, 100 * RECENT_RUNS):
            results[total] = await scenario(Path(tmp), total)
            print(f"{total:>7} runs: " + ", ".join(f"{k} {v:.2f}" for k, v in results[total].items()), flush=True)
    small, big = results[RECENT_RUNS], results[100 * RECENT_RUNS]
    print()
    print(f"{'':28}{'1,000 runs':>14}{'100,000 runs':>16}{'ratio':>8}")
    for key, label in (("size after MB", "database size, MB"), ("reporter pass ms", "reporter pass, ms"),
                       ("claim ms", "claim, ms"), ("size before MB", "size before pruning, MB"),
                       ("old reporter query ms", "old reporter join, ms")):
        print(f"{label:28}{small[key]:>14.2f}{big[key]:>16.2f}{big[key] / small[key]:>8.1f}")


if __name__ == "__main__":
    asyncio.run(main())
