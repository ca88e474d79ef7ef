"""Benchmark: SQLite against PostgreSQL as the bot's store, in one run.

1. Webhook acknowledgement: the real bot (``python -m bot.cli serve``, frozen, a Forge that is never
   contacted) on each store, signed deliveries sent on schedule at ``--rate`` (default 500/s) for
   ``--duration`` s by bench/webhook.py's load generator; p50/p99 from send to full answer, and
   whether every 202 was stored. The target: p99 < 10 ms. And where the CPU went meanwhile, per
   delivery (the bot, the PostgreSQL server) and in cores busy (this load generator, the rest of
   the machine): on two cores shared with other work the answers wait behind whatever else runs,
   so the rest's share says how far a p99 is the machine's and how far the bot's.
2. Claim: ``Store.claim`` over ``--runs`` queued runs, each call starting one (the decision reads
   every live run, so its cost grows with the queue); before it, the floor of any store call
   (``ping``: one round trip to PostgreSQL, one hop to SQLite's thread).
3. Drain: ``--runs`` queued runs in three pools, taken to ``completed`` by workers that claim and
   walk each run through its states (no containers: the store's part alone). SQLite: one
   process. PostgreSQL: two replica processes on one database, each with its own
   ``replica_max_running``. A watcher samples the active runs per pool every few milliseconds;
   at the end every run must have been claimed once, completed once, and run by one replica
   (lost 0, doubled 0), the limits never exceeded. Overhead per run: the store time a run costs
   (its claim's share and its transitions), and the wall time of the drain per run.

PostgreSQL is Debian's, started for the run in a temporary directory (tests/postgres.py), with
its default durability (fsync on, synchronous commit).

    python bench/postgres.py [--rate 500] [--duration 10] [--runs 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import asyncpg  # noqa: E402
import webhook  # noqa: E402  (bench/webhook.py: the load generator and the bot as a subprocess)

from bot.store import ACTIVE, RunRequest, is_postgres, open_store  # noqa: E402
from tests.postgres import PostgresServer  # noqa: E402

MAX_RUNNING = 8
POOL_LIMITS = {"a": 3, "b": 3, "c": 4}
REPLICA_MAX = 5  # each replica's own machine: two of them, 10 > MAX_RUNNING, so the total binds too
WORK = 0.005  # seconds a run "works" in each active state


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


# 1. Webhook acknowledgement -----------------------------------------------------------------------


async def stored_ids(location: str | Path) -> set[str]:
    if is_postgres(location):
        db = await asyncpg.connect(str(location))
        try:
            return {r[0] for r in await db.fetch("SELECT id FROM deliveries")}
        finally:
            await db.close()
    with sqlite3.connect(f"file:{location}?mode=ro", uri=True) as db:
        return {r[0] for r in db.execute("SELECT id FROM deliveries")}


async def ack(tmp: Path, store_url: str, args: argparse.Namespace, postgres: PostgresServer) -> dict:
    """The webhook's answers at ``--rate``, and where the CPU went meanwhile: the bot's, the
    PostgreSQL server's, the load generator's (this process) and the rest of the machine's (other
    work on a shared machine, which the answers wait behind)."""
    port = webhook.free_port()
    env = webhook.server_env() | {
        "DISPATCHBOT_FORGE_URL": "http://127.0.0.1:9", "DISPATCHBOT_FORGE_TOKEN": "bench-forge-token",
        "DISPATCHBOT_WEBHOOK_SECRET": webhook.SECRET, "DISPATCHBOT_BOT_LOGIN": "dispatchbot",
        "DISPATCHBOT_FROZEN": "true", "DISPATCHBOT_CONFIG": "/nonexistent", "DISPATCHBOT_HOST": "127.0.0.1",
        "DISPATCHBOT_PORT": str(port), "DISPATCHBOT_DATA_DIR": str(tmp / "data"),
    }
    if store_url:
        env["DISPATCHBOT_STORE_URL"] = store_url
    name = "postgresql" if store_url else "sqlite"
    server = webhook.Server(name, [sys.executable, "-m", "bot.cli", "serve"], env, port, tmp / f"{name}.log")
    import aiohttp

    try:
        async with aiohttp.ClientSession() as session:
            await server.wait_up(session, "/healthz")
        client = webhook.Client(port)
        await webhook.closed_loop(client, server, webhook.make_deliveries(300, 1), 4, 60.0, 202)
        postgres_since = postgres.cpu_seconds()
        result = await webhook.open_loop(
            client, server, webhook.make_deliveries(round(args.rate * args.duration), 10_000_000), args.rate, 202
        )
        postgres_cpu = postgres.cpu_seconds() - postgres_since
        await asyncio.sleep(1.0)
        stored = await stored_ids(store_url or tmp / "data" / "dispatchbot.sqlite3")
    finally:
        server.stop()
    sent = len(result.latencies) or 1
    return {"p50": result.ms(50), "p99": result.ms(99), "max": result.ms(100), "errors": sum(result.errors.values()),
            "requests": result.requests, "all_stored": set(result.accepted) <= stored,
            "bot_ms": 1000 * result.server_cpu / sent, "postgres_ms": 1000 * postgres_cpu / sent,
            "loadgen_cores": result.loadgen_cpu / result.elapsed,
            "rest_cores": max(0.0, result.other_cpu - postgres_cpu) / result.elapsed}


# 2. Claim and 3. drain ----------------------------------------------------------------------------


def request(n: int) -> RunRequest:
    pool = "abc"[n % 3]
    return RunRequest(owner="acme", repo="widgets", number=n, is_pull=False, agent=pool, model="", pool=pool,
                      review=False, task="t", trigger="comment", requested_by="bob")


async def queue(location: str | Path, runs: int) -> None:
    store = await open_store(location)
    try:
        for start in range(0, runs, 50):
            await asyncio.gather(*(store.request_run(request(n), trigger_key=f"k{n}")
                                   for n in range(start, min(start + 50, runs))))
    finally:
        await store.close()


async def claim_times(location: str | Path, runs: int) -> dict[str, list[float]]:
    """Each claim starts one more run: ms per claim, over a queue from ``runs`` down. And first
    the floor of any store call: ``ping`` (one trivial query, one round trip), ms each."""
    await queue(location, runs)
    store = await open_store(location)
    try:
        pings = []
        for _ in range(500):
            since = time.perf_counter()
            await store.ping()
            pings.append(1000 * (time.perf_counter() - since))
        times = []
        for n in range(1, min(runs, 200) + 1):
            since = time.perf_counter()
            claimed = await store.claim(max_running=n, pool_limits={}, spawn_intervals={})
            times.append(1000 * (time.perf_counter() - since))
            assert len(claimed) == 1, claimed
        return {"ping": pings, "claim": times}
    finally:
        await store.close()


async def worker(location: str, replica: str, replica_max: int | None) -> dict:
    """One replica's drain: claim whenever woken, walk each claimed run to completed."""
    store = await open_store(location)
    woken = store.subscribe("runs")
    store_time: list[float] = []
    ran: list[int] = []
    tasks: set[asyncio.Task] = set()

    async def timed(call):
        since = time.perf_counter()
        result = await call
        store_time.append(time.perf_counter() - since)
        return result

    async def walk(run_id: int) -> None:
        for state in ("running", "harvesting", "completed"):
            await asyncio.sleep(WORK)
            assert await timed(store.transition(run_id, state)) is not None
        ran.append(run_id)

    try:
        while True:
            claimed = await timed(store.claim(max_running=MAX_RUNNING, pool_limits=POOL_LIMITS, spawn_intervals={},
                                              replica=replica, replica_max_running=replica_max))
            for run in claimed:
                task = asyncio.create_task(walk(run.id))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if not claimed and not tasks and not await store.runs(states=("queued",)):
                break
            await woken.wait(0.5)
        return {"ran": ran, "store_time": sum(store_time), "calls": len(store_time)}
    finally:
        await store.close()


async def watch(location: str | Path, stop: asyncio.Event) -> dict:
    """The most active runs seen at once, in all and per pool, sampled in one snapshot each."""
    store = await open_store(location)
    most: dict[str, int] = {}
    try:
        while not stop.is_set():
            census = await store.census()
            counts: dict[str, int] = {"all": 0}
            for (pool, state), n in census.live.items():
                if state in ACTIVE:
                    counts["all"] += n
                    counts[pool] = counts.get(pool, 0) + n
            for key, n in counts.items():
                most[key] = max(most.get(key, 0), n)
            await asyncio.sleep(0.003)
    finally:
        await store.close()
    return most


async def drain(location: str | Path, runs: int, replicas: int) -> dict:
    await queue(location, runs)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(location, stop))
    since = time.perf_counter()
    if replicas == 1:
        outcomes = [await worker(str(location), "bot-1", None)]
    else:  # separate processes, as replicas are
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", str(location), f"bot-{n + 1}", stdout=subprocess.PIPE, cwd=REPO,
        ) for n in range(replicas)]
        outcomes = [json.loads((await p.communicate())[0]) for p in procs]
    wall = time.perf_counter() - since
    stop.set()
    most = await watcher
    store = await open_store(location)
    try:
        done = await store.runs(states=("completed",))
        claims = {}
        for run in done:
            claims[run.id] = sum(1 for change in await store.history(run.id) if change.to_state == "preparing")
    finally:
        await store.close()
    ran = [i for o in outcomes for i in o["ran"]]
    return {
        "wall": wall, "lost": runs - len(set(ran) & {r.id for r in done}), "doubled": len(ran) - len(set(ran))
        + sum(1 for n in claims.values() if n != 1), "most": most,
        "per_replica": [len(o["ran"]) for o in outcomes],
        "store_ms_per_run": 1000 * sum(o["store_time"] for o in outcomes) / runs,
    }


# Run ----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    started_at = loadavg()
    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-postgres-") as tmpdir:
            tmp = Path(tmpdir)
            figures = {}
            for name, url in (("sqlite", ""), ("postgresql", server.create_database())):
                print(f"{name}: webhook at {args.rate:g}/s for {args.duration:g} s", file=sys.stderr)
                (tmp / name).mkdir()
                figures[name] = {"ack": await ack(tmp / name, url, args, server)}
                for what, call in (("claim", claim_times), ("drain", drain)):
                    print(f"{name}: {what}", file=sys.stderr)
                    location = server.create_database() if name == "postgresql" else tmp / name / f"{what}.sqlite3"
                    if what == "claim":
                        figures[name][what] = await call(location, args.runs)
                    else:
                        figures[name][what] = await call(location, args.runs, 1 if name == "sqlite" else 2)
    finally:
        server.close()
    report(figures, args, (started_at, loadavg()))


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(figures: dict, args: argparse.Namespace, load: tuple[str, str]) -> None:
    print(f"\nSQLite against PostgreSQL ({os.cpu_count()} cores, PostgreSQL on the same machine;"
          f" load average {load[0]} at the start, {load[1]} at the end)")
    print(f"  {'':<44}{'SQLite':>14}{'PostgreSQL':>14}")

    def row(label: str, get) -> None:
        print(f"  {label:<44}{get(figures['sqlite']):>14}{get(figures['postgresql']):>14}")

    row(f"webhook ack p50 ms at {args.rate:g}/s", lambda f: f"{f['ack']['p50']:.2f}")
    row(f"webhook ack p99 ms at {args.rate:g}/s", lambda f: f"{f['ack']['p99']:.2f}")
    row("webhook ack max ms", lambda f: f"{f['ack']['max']:.2f}")
    row("webhook errors / every 202 stored", lambda f: f"{f['ack']['errors']} / {f['ack']['all_stored']}")
    row("webhook CPU ms per delivery: bot / PostgreSQL",
        lambda f: f"{f['ack']['bot_ms']:.2f} / {f['ack']['postgres_ms']:.2f}")
    row("webhook cores busy: load generator / rest", lambda f: f"{f['ack']['loadgen_cores']:.2f} / {f['ack']['rest_cores']:.2f}")
    row("store call floor: ping p50 / p99 ms",
        lambda f: f"{pct(f['claim']['ping'], 50):.2f} / {pct(f['claim']['ping'], 99):.2f}")
    row(f"claim p50 / p99 ms, {args.runs} queued",
        lambda f: f"{pct(f['claim']['claim'], 50):.1f} / {pct(f['claim']['claim'], 99):.1f}")
    row(f"drain of {args.runs} runs: replicas", lambda f: "1" if len(f["drain"]["per_replica"]) == 1 else
        "+".join(str(n) for n in f["drain"]["per_replica"]))
    row("drain: wall s", lambda f: f"{f['drain']['wall']:.1f}")
    row("drain: lost / doubled", lambda f: f"{f['drain']['lost']} / {f['drain']['doubled']}")
    row(f"drain: most active seen (limit {MAX_RUNNING})", lambda f: str(f["drain"]["most"].get("all", 0)))
    row(f"drain: most per pool seen (limits {'/'.join(map(str, POOL_LIMITS.values()))})",
        lambda f: "/".join(str(f["drain"]["most"].get(p, 0)) for p in POOL_LIMITS))
    row("drain: store time per run ms", lambda f: f"{f['drain']['store_ms_per_run']:.1f}")
    row("drain: wall time per run ms", lambda f: f"{1000 * f['drain']['wall'] / args.runs:.1f}")
    ok = all(f["drain"]["lost"] == 0 == f["drain"]["doubled"] and f["drain"]["most"].get("all", 0) <= MAX_RUNNING
             and all(f["drain"]["most"].get(p, 0) <= n for p, n in POOL_LIMITS.items()) for f in figures.values())
    print(f"targets: ack p99 < 10 ms: {'PASS' if all(f['ack']['p99'] < 10 for f in figures.values()) else 'FAIL'};"
          f" drain lost 0, doubled 0, limits kept: {'PASS' if ok else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--worker", nargs=2, metavar=("URL", "REPLICA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker(args.worker[0], args.worker[1], REPLICA_MAX))))
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
