"""Benchmark of the model gateway (issue #14): what it costs a model call, against a direct call.

Everything real: a scripted model server (aiohttp on the loopback, answering like Anthropic's
Messages API: a small JSON answer, and a long SSE stream of ``--stream-mb`` MB in 16 KiB events),
the gateway's own handler (``bot.gateway.models.ModelProxy``, its token checks against a real SQLite
store holding one running run, the key swap, the chunk-by-chunk pass-through) served on the
loopback too, each in a process of its own (as the bot and a model server are); the same client,
in this process, calls both. Figures:

1. **added latency per call** (target p50 < 2 ms): ``--calls`` sequential small calls, direct and
   through the gateway, on kept-alive connections; p50 and p99 of each and of the difference.
2. **throughput of a long streamed answer** (target >= 0.95 of direct), with 1 and 20 concurrent
   streams: MB/s summed over the streams, in rounds of direct, gateway, a bare TCP relay in
   Python (the floor of any relay in Python on this machine) and a relay that never copies a byte
   into user space (``splice(2)``: the floor of any third process in the path), back to back,
   medians; and the CPU time the gateway and the Python relay spend per GB (a figure the other
   processes on the machine change less). Bytes as fast as the machine makes them: a measure of
   the machine's 2 cores shared by three processes, not of a model's stream.
3. **a long streamed answer at a model's pace**, with 1 and 20 concurrent streams: the model server
   sends ``--paced-events`` small events per second and stream (as a model streams its tokens,
   far faster than any real one) for ``--paced-seconds``; events/s delivered, summed over the
   streams, through the gateway against direct (target >= 0.95), and the delay the gateway adds to
   each event (its send time, stamped by the server, to its arrival at the client), p50 and p99.

Figure 1 of bench/dispatch.py (webhook -> container running) measures ``egress = "gateway"``
against ``egress = "open"``.

    python bench/gateway.py [--calls 2000] [--stream-mb 64] [--rounds 5] [--paced-events 200] [--paced-seconds 5]

The exit status is 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import sys
import threading
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.gateway.grants import Grants  # noqa: E402
from bot.gateway.models import ModelProxy  # noqa: E402
from bot.gateway.observer import NoObserver  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.store import RunRequest, open_store  # noqa: E402

EVENT = b"event: content_block_delta\ndata: " + b"x" * (16 * 1024 - 40) + b"\n\n"
# An Anthropic text delta of a few tokens (~200 bytes), its send time in "t".
PACED = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"t":%d,'
         b'"delta":{"type":"text_delta","text":"' + b"a few tokens " * 8 + b'"}}\n\n')
ANSWER = b'{"type":"message","content":[{"type":"text","text":"ok"}],"usage":{"input_tokens":5,"output_tokens":1}}'


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"


def model_app(stream_bytes: int) -> web.Application:
    async def messages(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if not body.get("stream"):
            return web.Response(body=ANSWER, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if "paced" in body:
            await paced(response, *body["paced"])
        else:
            for _ in range(stream_bytes // len(EVENT)):
                await response.write(EVENT)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    return app


async def paced(response: web.StreamResponse, per_second: int, seconds: float) -> None:
    """Small events at a steady pace, each stamped with its send time (CLOCK_MONOTONIC: one clock
    for every process on the machine); events that fell behind are sent at once, not dropped."""
    started = time.monotonic()
    for n in range(int(per_second * seconds)):
        due = started + n / per_second
        if (wait := due - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        await response.write(PACED % time.monotonic_ns())


async def latencies(http: aiohttp.ClientSession, url: str, calls: int) -> list[float]:
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        async with http.post(url, json={"model": "m", "messages": []}, headers={"x-api-key": "k"}) as answer:
            await answer.read()
        out.append((time.perf_counter() - started) * 1000)
    return out


async def throughput(http: aiohttp.ClientSession, url: str, streams: int, *pids: int) -> tuple[float, list[float]]:
    """(MB/s summed over ``streams`` concurrent streams, CPU seconds per GB of each of ``pids``;
    pid 0 is this process: the client)."""
    async def one() -> int:
        size = 0
        async with http.post(url, json={"stream": True}, headers={"x-api-key": "k"}) as answer:
            async for chunk in answer.content.iter_any():
                size += len(chunk)
        return size

    cpu = [cpu_seconds(pid) for pid in pids]
    started = time.perf_counter()
    total = sum(await asyncio.gather(*(one() for _ in range(streams))))
    elapsed = time.perf_counter() - started
    return total / elapsed / 1e6, [(cpu_seconds(pid) - before) / total * 1e9 for pid, before in zip(pids, cpu, strict=True)]


async def paced_stream(http: aiohttp.ClientSession, url: str, streams: int, per_second: int,
                       seconds: float) -> tuple[float, list[float]]:
    """(events/s summed over ``streams`` concurrent paced streams, each event's delay in ms from its
    send to its arrival)."""
    delays: list[float] = []

    async def one() -> int:
        events, pending = 0, b""
        async with http.post(url, json={"stream": True, "paced": [per_second, seconds]},
                             headers={"x-api-key": "k"}) as answer:
            async for chunk in answer.content.iter_any():
                now = time.monotonic_ns()
                *complete, pending = (pending + chunk).split(b"\n\n")
                for event in complete:
                    sent = int(event.split(b'"t":', 1)[1].split(b",", 1)[0])
                    delays.append((now - sent) / 1e6)
                events += len(complete)
        return events

    started = time.perf_counter()
    events = sum(await asyncio.gather(*(one() for _ in range(streams))))
    return events / (time.perf_counter() - started), delays


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far, all its threads (pid 0: this process)."""
    if not pid:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median_of(measures: tuple[tuple[float, list[float]], ...]) -> tuple[float, list[float]]:
    """The median MB/s and the median CPU per GB of each process, over rounds of one path."""
    return (statistics.median(m[0] for m in measures),
            [statistics.median(column) for column in zip(*(m[1] for m in measures), strict=True)])


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


async def run_model(stream_mb: int) -> None:
    runner, url = await serve(model_app(stream_mb * 1024 * 1024))
    print(url, flush=True)
    await asyncio.Event().wait()


async def run_gateway(model_url: str) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-0123456789abcdef"
    # One run's token for every stream: as many calls of it in flight as the bench opens streams.
    settings = Settings(data_dir=tmp, base_urls={"claude": model_url}, gateway={"run_model_calls": 64})
    store = await open_store(tmp / "store.sqlite3")
    run = await store.request_run(RunRequest(owner="acme", repo="widgets", number=1, is_pull=False, agent="claude",
                                             model="", pool="claude", review=False, task="bench", trigger="label",
                                             requested_by="bob"), trigger_key="bench")
    for state in ("preparing", "running"):
        run = await store.transition(run.id, state)
    grants = Grants(b"k" * 32, store)
    proxy = ModelProxy(settings, grants, NoObserver(), lambda run_id, reason: None)
    server = await proxy.serve("127.0.0.1", 0)  # as the gateway serves it: each connection counted
    gw_url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    print(f"{gw_url}/claude/{grants.token(run, 'agent')}/v1/messages", flush=True)
    await asyncio.Event().wait()


class _Relay(asyncio.Protocol):
    """One side of a bare TCP relay (the floor of any relay in Python): bytes as they come, with
    flow control (a side that cannot keep up pauses the other's reading)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Relay | None = None
        self.pending = b""  # to write once connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.pending:
            self.transport.write(self.pending)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is None:
            peer.pending += data
        elif peer is not None:
            peer.transport.write(data)  # type: ignore[union-attr]

    def pause_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer and self.peer.transport:
            self.peer.transport.close()


async def run_relay(model_url: str) -> None:
    loop = asyncio.get_running_loop()
    host, port = model_url.removeprefix("http://").split(":")

    connecting: set[asyncio.Task] = set()

    def accepted() -> _Relay:
        client, upstream = _Relay(), _Relay()
        client.peer, upstream.peer = upstream, client
        task = loop.create_task(loop.create_connection(lambda: upstream, host, int(port)))
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    server = await loop.create_server(accepted, "127.0.0.1", 0)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/messages", flush=True)
    await asyncio.Event().wait()


def run_splice(model_url: str) -> None:
    """A relay whose bytes never reach user space: socket -> pipe -> socket with ``splice(2)``, a
    thread per direction (the call releases the GIL). What is left is the kernel's own work for a
    third process in the path."""
    host, port = model_url.removeprefix("http://").split(":")

    def pump(src: socket.socket, dst: socket.socket) -> None:
        read, write = os.pipe()
        try:
            while n := os.splice(src.fileno(), write, 1 << 20):
                while n:
                    n -= os.splice(read, dst.fileno(), n)
        except OSError:
            pass  # a side went away: the other one is shut below
        finally:
            os.close(read)
            os.close(write)
            for side in (dst, src):
                try:
                    side.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    server = socket.create_server(("127.0.0.1", 0))
    print(f"http://127.0.0.1:{server.getsockname()[1]}/v1/messages", flush=True)
    while True:
        client, _ = server.accept()
        upstream = socket.create_connection((host, int(port)))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(src, dst), daemon=True).start()


async def spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE)
    line = (await process.stdout.readline()).decode().strip()  # type: ignore[union-attr]
    if not line:
        raise SystemExit(f"{' '.join(args)}: the server did not start (its error is above)")
    return process, line


async def main(calls: int, stream_mb: int, rounds_of: int, paced_events: int, paced_seconds: float) -> int:
    model, model_url = await spawn("--serve-model", "--stream-mb", str(stream_mb))
    gateway, via = await spawn("--serve-gateway", model_url)
    relay, bare = await spawn("--serve-relay", model_url)
    splicer, spliced = await spawn("--serve-splice", model_url)
    direct = f"{model_url}/v1/messages"
    missed = 0
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await latencies(http, direct, 50)  # warm both paths
            await latencies(http, via, 50)
            d, g = await latencies(http, direct, calls), await latencies(http, via, calls)
            added = [b - a for a, b in zip(sorted(d), sorted(g), strict=True)]
            print(f"1. latency per call, {calls} calls (ms): direct p50 {pct(d, 50):.3f} p99 {pct(d, 99):.3f}; "
                  f"gateway p50 {pct(g, 50):.3f} p99 {pct(g, 99):.3f}; "
                  f"added p50 {pct(added, 50):.3f} p99 {pct(added, 99):.3f} (target p50 < 2 ms)")
            missed += pct(added, 50) >= 2.0
            for streams in (1, 20):
                # Rounds of direct, gateway, relay back to back share the machine's noise (2 cores:
                # the client, the model server and a relay compete); a round's ratios are its own.
                rounds = [(await throughput(http, direct, streams, model.pid, 0),
                           await throughput(http, via, streams, gateway.pid),
                           await throughput(http, bare, streams, relay.pid),
                           await throughput(http, spliced, streams, splicer.pid))
                          for _ in range(rounds_of)]
                d, g, r, k = (median_of(side) for side in zip(*rounds, strict=True))
                ratio = statistics.median(b[0] / a[0] for a, b, _, _ in rounds)
                floor = statistics.median(b[0] / a[0] for a, _, b, _ in rounds)
                kernel = statistics.median(b[0] / a[0] for a, _, _, b in rounds)
                print(f"2. {stream_mb} MB streamed x {streams}, median of {rounds_of} rounds: "
                      f"direct {d[0]:.0f} MB/s, gateway {g[0]:.0f} MB/s, ratio {ratio:.2f} (target >= 0.95); "
                      f"bare TCP relay in Python {r[0]:.0f} MB/s, ratio {floor:.2f}; "
                      f"splice relay {k[0]:.0f} MB/s, ratio {kernel:.2f}")
                # Where the CPU goes: the direct path alone keeps most of the cores busy, and a third
                # process in the path takes its share from the same cores.
                cores = len(os.sched_getaffinity(0))
                model_cpu, client_cpu = d[1]
                print(f"   CPU per GB: direct keeps {(model_cpu + client_cpu) * d[0] / 1e3:.1f} of {cores} cores busy "
                      f"(model server {model_cpu:.2f} s, client {client_cpu:.2f} s); in the path: gateway "
                      f"{g[1][0]:.2f} s, bare relay {r[1][0]:.2f} s, splice relay {k[1][0]:.2f} s (the kernel's work)")
                missed += ratio < 0.95
            for streams in (1, 20):
                rounds = [(await paced_stream(http, direct, streams, paced_events, paced_seconds),
                           await paced_stream(http, via, streams, paced_events, paced_seconds))
                          for _ in range(max(1, rounds_of // 2))]
                ratio = statistics.median(g[0] / d[0] for d, g in rounds)
                d_delays = sorted(x for d, _ in rounds for x in d[1])
                g_delays = sorted(x for _, g in rounds for x in g[1])
                print(f"3. {paced_events} events/s x {paced_seconds:g} s streamed x {streams}, median of {len(rounds)} rounds: "
                      f"direct {statistics.median(d[0] for d, _ in rounds):.0f} events/s, "
                      f"gateway {statistics.median(g[0] for _, g in rounds):.0f} events/s, ratio {ratio:.2f} "
                      f"(target >= 0.95); delay per event (ms): direct p50 {pct(d_delays, 50):.2f} p99 {pct(d_delays, 99):.2f}, "
                      f"gateway p50 {pct(g_delays, 50):.2f} p99 {pct(g_delays, 99):.2f}")
                missed += ratio < 0.95
    finally:
        for process in (splicer, relay, gateway, model):
            process.terminate()
            await process.wait()
    return 1 if missed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--stream-mb", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paced-events", type=int, default=200)
    parser.add_argument("--paced-seconds", type=float, default=5)
    parser.add_argument("--serve-model", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", metavar="MODEL_URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve-relay", metavar="MODEL_URL", help=argparse.SUPPRESS)
    parser.add_argument("--serve-splice", metavar="MODEL_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_model:
        asyncio.run(run_model(args.stream_mb))
    elif args.serve_relay:
        asyncio.run(run_relay(args.serve_relay))
    elif args.serve_splice:
        run_splice(args.serve_splice)
    elif args.serve_gateway:
        asyncio.run(run_gateway(args.serve_gateway))
    else:
        sys.exit(asyncio.run(main(args.calls, args.stream_mb, args.rounds, args.paced_events, args.paced_seconds)))
