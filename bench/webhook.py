"""Benchmark of the webhook front door: ``POST /webhook`` of the real bot against bare aiohttp.

What it measures, and why: Gitea waits 5 s for an answer and never retries, so the endpoint must
acknowledge fast even in a burst, and it must have stored the delivery before answering. This
script starts the real bot (``python -m bot.cli serve``, fresh SQLite file, frozen, a Forge URL that
is never contacted) and drives signed ``issue_comment``/``created`` deliveries at it:

1. open loop: a fixed rate (default 500/s) for a fixed time (default 20 s), sent on schedule
   whatever the answers, so latency (intended send time -> full response) includes queueing;
2. closed loop: a fixed number of requests in flight (default 32) for a few seconds: max throughput.

It does the same against a bare aiohttp hello-world (one POST route that reads the body and answers
200 "ok") with bodies of the same size, so the bot's cost can be told apart from aiohttp's own and
from the load generator's. Then it checks that every delivery answered 202 is in the bot's
``deliveries`` table, and whether the targets hold: p99 < 10 ms at 500/s with persistence, and max
throughput >= 40 % of hello-world's.

The load generator runs in this process: pre-rendered signed requests written on keep-alive
connections by a minimal HTTP/1.1 client (aiohttp's client costs as much CPU per request as the
hello-world server, so with it the baseline measured the load generator). The servers are
subprocesses; on a 2-core machine they compete with it for the same two cores. After the closed
loop the bot's intake is still handling the burst: how far behind it was is printed too.

    python bench/webhook.py [--rate 500] [--duration 20] [--concurrency 32] [--closed-duration 5]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parent.parent
PAYLOAD = REPO / "tests" / "fakeforge" / "data" / "payloads" / "issue-comment-created.json"
SECRET = "bench-webhook-secret"
COMMENT = "Thanks, that matches what I see here."  # no command: the handler has nothing to do
P99_TARGET_MS = 10.0
RATIO_TARGET = 0.40
OTHER_CPU_WARNING = 0.15  # of one core, used by processes other than the server and this one

HELLO_APP = """
import sys
from aiohttp import web

async def hook(request):
    await request.read()
    return web.Response(text="ok")

app = web.Application(client_max_size=5 * 1024 * 1024)
app.router.add_post("/webhook", hook)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


# Deliveries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    id: str
    wire: bytes  # the whole HTTP/1.1 request


def render(headers: dict[str, str], body: bytes) -> bytes:
    """An HTTP/1.1 request as Gitea's Go client sends it."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return (f"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: Go-http-client/1.1\r\n{head}"
            f"Content-Length: {len(body)}\r\nAccept-Encoding: gzip\r\n\r\n").encode() + body


def make_deliveries(count: int, first_comment_id: int) -> list[Delivery]:
    """Signed deliveries, each with its own delivery id and comment id.

    The payload is re-serialized once with a placeholder comment id, which is then substituted
    (it appears in ``comment.id`` and ``comment.html_url``): the same bytes as one ``json.dumps``
    per delivery, ten times faster, so the closed loop can have tens of thousands ready.
    """
    data = json.loads(PAYLOAD.read_bytes())
    placeholder = "987654321987"
    data["comment"]["body"] = COMMENT
    data["comment"]["id"] = int(placeholder)
    data["comment"]["html_url"] = f"{data['issue']['html_url']}#issuecomment-{placeholder}"
    parts = json.dumps(data, indent=2).encode().split(placeholder.encode())
    assert len(parts) == 3, "the placeholder must occur exactly twice"
    deliveries = []
    for comment_id in range(first_comment_id, first_comment_id + count):
        body = str(comment_id).encode().join(parts)
        delivery_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "X-Gitea-Event": "issue_comment",
            "X-Gitea-Event-Type": "issue_comment",
            "X-Gitea-Delivery": delivery_id,
            "X-Gitea-Signature": hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
        }
        deliveries.append(Delivery(delivery_id, render(headers, body)))
    return deliveries


# Servers ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server subprocess with its log in a file; stopped with SIGINT (aiohttp's graceful exit)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.name, self.port, self.log = name, port, log
        self.url = f"http://127.0.0.1:{port}"
        with log.open("wb") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)

    async def wait_up(self, session: aiohttp.ClientSession, path: str, timeout: float = 60.0) -> None:
        """Any HTTP answer means it is up (the bot's /healthz says 503 while the Forge is down)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                async with session.get(self.url + path, timeout=aiohttp.ClientTimeout(total=6)) as resp:
                    await resp.read()
                    return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout} s:\n{self.tail()}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process, all threads (from /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


# asyncio reads into a fresh 256 KiB buffer per recv. With glibc's dynamic thresholds that buffer
# is mmapped, shrunk and unmapped, or grows and trims the heap top, on every read, depending on the
# process's heap history: a quarter of hello-world's CPU went to mmap/munmap/brk in some runs and
# none in others, so the baseline swung between 12,000/s and 23,000/s. Fixed thresholds, the same
# for both servers, keep that buffer in the heap and make the comparison stable.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(1 << 20), "MALLOC_TRIM_THRESHOLD_": str(8 << 20)}


def server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHBOT_") and k != "PORT"}
    return env | MALLOC_ENV


def start_bot(tmp: Path) -> Server:
    port = free_port()
    env = server_env() | {
        "DISPATCHBOT_FORGE_URL": "http://127.0.0.1:9",
        "DISPATCHBOT_FORGE_TOKEN": "bench-forge-token",
        "DISPATCHBOT_WEBHOOK_SECRET": SECRET,
        "DISPATCHBOT_BOT_LOGIN": "dispatchbot",
        "DISPATCHBOT_FROZEN": "true",
        "DISPATCHBOT_CONFIG": "/nonexistent",
        "DISPATCHBOT_HOST": "127.0.0.1",
        "DISPATCHBOT_PORT": str(port),
        "DISPATCHBOT_DATA_DIR": str(tmp / "data"),
    }
    return Server("bot", [sys.executable, "-m", "bot.cli", "serve"], env, port, tmp / "bot.log")


def start_hello(tmp: Path) -> Server:
    port = free_port()
    return Server("hello-world", [sys.executable, "-c", HELLO_APP, str(port)], server_env(), port, tmp / "hello.log")


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine, all cores (from /proc/stat), to spot other load."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# Load ---------------------------------------------------------------------------------------


@dataclass
class Result:
    """One phase against one server. Latencies in seconds; ``lag`` is how late sends left."""

    requests: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    loadgen_cpu: float = 0.0
    other_cpu: float = 0.0
    accepted: list[str] = field(default_factory=list)

    def ms(self, p: float) -> float:
        """Nearest-rank percentile of the latencies, in ms (p=100 is the max)."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        return 1000 * ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


class Cpu:
    """CPU seconds used during a phase by the server, by this process and by everything else."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.start = (server.cpu_seconds(), time.process_time(), machine_cpu_seconds())

    def stop(self, result: Result) -> None:
        server, own, machine = (b - a for a, b in zip(self.start, (
            self.server.cpu_seconds(), time.process_time(), machine_cpu_seconds()), strict=True))
        result.server_cpu, result.loadgen_cpu, result.other_cpu = server, own, max(0.0, machine - server - own)


class Client:
    """A minimal HTTP/1.1 keep-alive client for pre-rendered requests.

    aiohttp's client spends about as much CPU per request as the hello-world server; on two cores
    the load generator would then measure itself rather than the servers. This one reads the
    status line and a ``Content-Length`` body, which is all both servers send, at a fraction of
    that cost.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def send(self, wire: bytes) -> int:
        """Send one request and read its answer; returns the HTTP status."""
        reader, writer = self.idle.pop() if self.idle else await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(wire)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = int(head.lower().split(b"\r\ncontent-length:", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
        except BaseException:
            writer.close()
            raise
        self.idle.append((reader, writer))
        return status



async def post(client: Client, d: Delivery, expect: int, result: Result) -> None:
    """One delivery; its latency runs from the send to the full response."""
    result.requests += 1
    since = time.perf_counter()
    try:
        async with asyncio.timeout(5.0):  # Gitea's delivery timeout
            status = await client.send(d.wire)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as e:
        result.errors[type(e).__name__] += 1
        return
    if status != expect:
        result.errors[f"HTTP {status}"] += 1
        return
    result.latencies.append(time.perf_counter() - since)
    result.accepted.append(d.id)


async def open_loop(client: Client, server: Server, deliveries: list[Delivery], rate: float,
                    expect: int) -> Result:
    """Send delivery i at start + i/rate whatever happened to the others.

    Latency is measured from the actual send; how late sends left their schedule (the load
    generator's timer resolution, about 1 ms, and its own CPU) is recorded apart, in ``lag``.
    """
    result, tasks = Result(), []
    cpu = Cpu(server)
    start = time.perf_counter() + 0.01
    for i, d in enumerate(deliveries):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result.lag.append(time.perf_counter() - due)
        tasks.append(asyncio.create_task(post(client, d, expect, result)))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    cpu.stop(result)
    return result


async def closed_loop(client: Client, server: Server, deliveries: list[Delivery],
                      concurrency: int, duration: float, expect: int) -> Result:
    """``concurrency`` workers, each sending the next delivery as soon as its last one is answered."""
    result = Result()
    pending: Iterator[Delivery] = iter(deliveries)
    cpu = Cpu(server)
    start = time.perf_counter()
    deadline = start + duration

    async def worker() -> None:
        while time.perf_counter() < deadline and (d := next(pending, None)) is not None:
            await post(client, d, expect, result)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    cpu.stop(result)
    return result


# The bot's SQLite file ----------------------------------------------------------------------


def read_deliveries(db: Path) -> tuple[set[str], int]:
    """Ids in the ``deliveries`` table and how many were handled, through a read-only connection."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM deliveries")}
        (handled,) = conn.execute("SELECT COUNT(*) FROM deliveries WHERE handled_at IS NOT NULL").fetchone()
    conn.close()
    return ids, handled


async def wait_handled(db: Path, timeout: float = 120.0) -> float:
    """Wait until the intake worker has handled every stored delivery; returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        ids, handled = read_deliveries(db)
        if handled >= len(ids):
            break
        await asyncio.sleep(0.2)
    return time.monotonic() - start


# Run ----------------------------------------------------------------------------------------


@dataclass
class Measured:
    open: Result
    closed: Result


async def measure(client: Client, server: Server, deliveries: Iterator[list[Delivery]],
                  args: argparse.Namespace, expect: int, db: Path | None = None) -> Measured:
    """Warm up, then the open loop, then (once the bot's intake has caught up) the closed loop."""
    print(f"{server.name}: warm-up ({args.warmup} deliveries)", file=sys.stderr)
    warm = await closed_loop(client, server, next(deliveries), 4, 60.0, expect)
    if warm.errors:
        raise RuntimeError(f"{server.name} failed the warm-up: {dict(warm.errors)}\n{server.tail()}")
    if db:
        await wait_handled(db)
    print(f"{server.name}: open loop, {args.rate:g}/s for {args.duration:g} s", file=sys.stderr)
    opened = await open_loop(client, server, next(deliveries), args.rate, expect)
    if db:
        waited = await wait_handled(db)
        print(f"  intake caught up {waited:.1f} s after the open loop", file=sys.stderr)
    print(f"{server.name}: closed loop, {args.concurrency} in flight for {args.closed_duration:g} s", file=sys.stderr)
    batch = next(deliveries)
    closed = await closed_loop(client, server, batch, args.concurrency, args.closed_duration, expect)
    if db:
        stored, handled = read_deliveries(db)
        waited = await wait_handled(db)
        print(f"  intake: {len(stored) - handled} deliveries still to handle when the closed loop ended,"
              f" caught up {waited:.1f} s later", file=sys.stderr)
    if closed.requests == len(batch):
        print(f"  note: all {len(batch)} precomputed deliveries used before the time was up", file=sys.stderr)
    return Measured(opened, closed)


def batches(args: argparse.Namespace) -> Iterator[list[Delivery]]:
    """Warm-up, open-loop and closed-loop deliveries; comment ids never repeat within a run."""
    counter = itertools.count(10_000, 1_000_000)
    yield make_deliveries(args.warmup, next(counter))
    yield make_deliveries(round(args.rate * args.duration), next(counter))
    yield make_deliveries(args.closed_max, next(counter))


def table(bot: Measured, hello: Measured, args: argparse.Namespace) -> list[str]:
    def row(label: str, fmt: str, get: object) -> str:
        values = [fmt.format(get(m)) for m in (bot, hello)]  # type: ignore[operator]
        return f"  {label:<26}{values[0]:>14}{values[1]:>14}"

    def cpu(r: Result) -> str:
        return "/".join(f"{100 * c / r.elapsed:.0f}" for c in (r.server_cpu, r.loadgen_cpu, r.other_cpu))

    lines = [f"  {'':<26}{'bot':>14}{'hello-world':>14}",
             f"open loop: {args.rate:g}/s for {args.duration:g} s (latency: send -> full response)"]
    for label, fmt, get in [
        ("requests", "{}", lambda m: m.open.requests),
        ("errors", "{}", lambda m: sum(m.open.errors.values())),
        ("p50 ms", "{:.2f}", lambda m: m.open.ms(50)),
        ("p99 ms", "{:.2f}", lambda m: m.open.ms(99)),
        ("max ms", "{:.2f}", lambda m: m.open.ms(100)),
        ("achieved req/s", "{:.0f}", lambda m: m.open.rate),
        ("send lag p99 ms", "{:.2f}", lambda m: 1000 * sorted(m.open.lag)[int(0.99 * (len(m.open.lag) - 1))]),
        ("CPU % server/loadgen/other", "{}", lambda m: cpu(m.open)),
    ]:
        lines.append(row(label, fmt, get))
    lines.append(f"closed loop: {args.concurrency} in flight for {args.closed_duration:g} s")
    for label, fmt, get in [
        ("requests", "{}", lambda m: m.closed.requests),
        ("errors", "{}", lambda m: sum(m.closed.errors.values())),
        ("max throughput req/s", "{:.0f}", lambda m: m.closed.rate),
        ("p50 ms", "{:.2f}", lambda m: m.closed.ms(50)),
        ("p99 ms", "{:.2f}", lambda m: m.closed.ms(99)),
        ("CPU % server/loadgen/other", "{}", lambda m: cpu(m.closed)),
    ]:
        lines.append(row(label, fmt, get))
    for name, m in (("bot", bot), ("hello-world", hello)):
        for phase, r in (("open", m.open), ("closed", m.closed)):
            if r.errors:
                lines.append(f"  {name} {phase} loop errors: {dict(r.errors)}")
            if r.other_cpu / r.elapsed > OTHER_CPU_WARNING:
                lines.append(f"  warning: other processes used {100 * r.other_cpu / r.elapsed:.0f}% CPU during the"
                             f" {name} {phase} loop: its figures are disturbed, run again on a quiet machine")
    return lines


async def run(args: argparse.Namespace) -> int:
    print(f"preparing {args.warmup + round(args.rate * args.duration) + args.closed_max} signed deliveries per server",
          file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-webhook-") as tmpdir:
        tmp = Path(tmpdir)
        async with aiohttp.ClientSession() as session:  # for the readiness checks
            bot = start_bot(tmp)
            db = tmp / "data" / "dispatchbot.sqlite3"
            try:
                await bot.wait_up(session, "/healthz")
                bot_figures = await measure(Client(bot.port), bot, batches(args), args, 202, db)
                await wait_handled(db)
                stored, handled = read_deliveries(db)
            finally:
                bot.stop()
            hello = start_hello(tmp)
            try:
                await hello.wait_up(session, "/webhook")
                hello_figures = await measure(Client(hello.port), hello, batches(args), args, 200)
            finally:
                hello.stop()

    sent = args.warmup + bot_figures.open.requests + bot_figures.closed.requests
    accepted = set(bot_figures.open.accepted + bot_figures.closed.accepted)
    ratio = bot_figures.closed.rate / hello_figures.closed.rate
    p99 = bot_figures.open.ms(99)
    persisted = accepted <= stored and len(stored) == sent
    bot_errors = sum(bot_figures.open.errors.values()) + sum(bot_figures.closed.errors.values())

    print()
    print(f"dispatchbot webhook benchmark: {os.cpu_count()} cores, shared by the load generator (this process)"
          " and the server subprocess; HTTP/1.1 keep-alive on loopback")
    print("\n".join(table(bot_figures, hello_figures, args)))
    print(f"throughput ratio bot / hello-world: {ratio:.2f}")
    print(f"persisted: {len(stored)} rows in deliveries; sent to the bot {sent} (incl. {args.warmup} warm-up),"
          f" answered 202 {len(accepted) + args.warmup}; every 202 stored: {'yes' if accepted <= stored else 'NO'};"
          f" handled by the intake worker: {handled}")
    print("targets:")
    print(f"  p99 < {P99_TARGET_MS:g} ms at {args.rate:g}/s with persistence: "
          f"{'PASS' if p99 < P99_TARGET_MS and persisted and not bot_errors else 'FAIL'} (p99 {p99:.2f} ms)")
    print(f"  throughput >= {RATIO_TARGET:.0%} of hello-world: {'PASS' if ratio >= RATIO_TARGET else 'FAIL'}"
          f" ({ratio:.0%})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=500.0, help="open-loop deliveries per second")
    parser.add_argument("--duration", type=float, default=20.0, help="open-loop seconds")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop requests in flight")
    parser.add_argument("--closed-duration", type=float, default=5.0, help="closed-loop seconds")
    parser.add_argument("--closed-max", type=int, default=0,
                        help="deliveries precomputed for the closed loop (default: 16000 per second)")
    parser.add_argument("--warmup", type=int, default=200, help="deliveries sent before measuring")
    args = parser.parse_args()
    args.closed_max = args.closed_max or math.ceil(16_000 * args.closed_duration)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
