"""Benchmark of the gateway's metering (issue #15): what reading every answer's usage costs a call.

Everything real: a scripted model server answering like Anthropic's Messages API (a small JSON
answer with its usage, and a long SSE stream of ``--stream-mb`` MB: ``message_start``, 16 KiB text
deltas, ``message_delta`` with the usage), and two gateways (``bot.gateway.models.ModelProxy``
with a real SQLite store holding one running run): one with no observer, one with the metering
(``bot.usage.metering.Metering``: the budget check at admission, the meter on every chunk, the
usage written to the store behind the answer). Each server runs in a process of its own; the
same client, in this process, calls both gateways. Figures:

1. **latency per call**: ``--calls`` small calls through each gateway in turns, on kept-alive
   connections; p50 and p99 of each and of each turn's difference (what metering adds).
2. **throughput of a long streamed answer** through each gateway (1 stream, best of 3), MB/s, and
   the ratio metered / unmetered.
3. **the meter alone**, in this process: ``--stream-mb`` MB of each wire format's stream fed in
   64 KiB chunks to its reader; microseconds per chunk and MB/s.

    python bench/usage.py [--calls 1000] [--stream-mb 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.gateway.grants import Grants  # noqa: E402
from bot.gateway.models import ModelProxy  # noqa: E402
from bot.gateway.observer import Api, NoObserver  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.store import RunRequest, SqliteStore  # noqa: E402
from bot.usage.budgets import Clock  # noqa: E402
from bot.usage.metering import Metering  # noqa: E402
from bot.usage.reader import Reader  # noqa: E402
from gateway import latencies, pct, serve, throughput  # noqa: E402 (bench/gateway.py's client and server)

CHUNK = 64 * 1024
TEXT = "x" * (16 * 1024 - 120)
USAGE = {"input_tokens": 400, "cache_read_input_tokens": 800, "cache_creation_input_tokens": 0, "output_tokens": 1}
ANSWER = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5-20250929",
                     "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                     "usage": USAGE | {"output_tokens": 3}}).encode()


def sse(data: dict) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def frames(api: Api, size: int) -> tuple[bytes, bytes, bytes]:
    """(opening, one text delta, closing) of a long streamed answer in ``api``'s wire format."""
    if api is Api.ANTHROPIC_MESSAGES:
        return (sse({"type": "message_start", "message": {"model": "claude-sonnet-4-5", "usage": USAGE}}),
                sse({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}}),
                sse({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}}))
    if api is Api.OPENAI_RESPONSES:
        return (b"", sse({"type": "response.output_text.delta", "item_id": "m", "delta": TEXT}),
                sse({"type": "response.completed", "response": {"model": "gpt-5", "usage": {
                    "input_tokens": 1200, "output_tokens": 9}}}))
    if api is Api.CHAT_COMPLETIONS:
        delta = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o", "usage": None,
                 "choices": [{"index": 0, "delta": {"content": TEXT}}]}
        last = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 1200,
                                                                                       "completion_tokens": 9}}
        return b"", f"data: {json.dumps(delta)}\n\n".encode(), f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode()
    if api is Api.GEMINI:
        part = {"candidates": [{"content": {"parts": [{"text": TEXT}], "role": "model"}}],
                "usageMetadata": {"promptTokenCount": 1200}, "modelVersion": "gemini-2.5-pro"}
        return b"", f"data: {json.dumps(part)}\r\n\r\n".encode(), b""
    line = {"model": "devstral-24b", "message": {"role": "assistant", "content": TEXT}, "done": False}
    last = {"model": "devstral-24b", "message": {"role": "assistant", "content": ""}, "done": True,
            "prompt_eval_count": 1200, "eval_count": 9}
    return b"", json.dumps(line).encode() + b"\n", json.dumps(last).encode() + b"\n"


def stream(api: Api, size: int) -> bytes:
    opening, delta, closing = frames(api, size)
    return opening + delta * (size // len(delta)) + closing


async def run_model(stream_mb: int) -> None:
    body = stream(Api.ANTHROPIC_MESSAGES, stream_mb * 1024 * 1024)

    async def messages(request: web.Request) -> web.StreamResponse:
        if not (await request.json()).get("stream"):
            return web.Response(body=ANSWER, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for at in range(0, len(body), 16 * 1024):
            await response.write(body[at:at + 16 * 1024])
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/v1/messages", messages)
    print((await serve(app))[1], flush=True)
    await asyncio.Event().wait()


async def run_gateway(model_url: str, metered: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-usage-"))
    os.environ["ANTHROPIC_API_KEY"] = "sk-ant-bench-0123456789abcdef"
    settings = Settings(data_dir=tmp, base_urls={"claude": model_url},
                        prices={"claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cached": 0.3}})
    store = await SqliteStore.open(tmp / "store.sqlite3")
    run = await store.request_run(RunRequest(owner="acme", repo="widgets", number=1, is_pull=False, agent="claude",
                                             model="", pool="claude", review=False, task="bench", trigger="label",
                                             requested_by="bob"), trigger_key="bench")
    for state in ("preparing", "running"):
        run = await store.transition(run.id, state)
    grants = Grants(b"k" * 32, store)
    observer = Metering(settings, store, Clock()) if metered else NoObserver()
    proxy = ModelProxy(settings, grants, observer, lambda run_id, reason: None)
    _, url = await serve(proxy.app())
    print(f"{url}/claude/{grants.token(run, 'agent')}/v1/messages", flush=True)
    await asyncio.Event().wait()


async def spawn(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(sys.executable, __file__, *args, stdout=asyncio.subprocess.PIPE)
    return process, (await process.stdout.readline()).decode().strip()  # type: ignore[union-attr]


def meter_alone(stream_mb: int) -> None:
    for api in (Api.ANTHROPIC_MESSAGES, Api.OPENAI_RESPONSES, Api.CHAT_COMPLETIONS, Api.GEMINI, Api.OLLAMA):
        body = stream(api, stream_mb * 1024 * 1024)
        chunks = [body[at:at + CHUNK] for at in range(0, len(body), CHUNK)]
        reader = Reader(api)
        started = time.perf_counter()
        for chunk in chunks:
            reader.feed(chunk)
        reading = reader.finish()
        took = time.perf_counter() - started
        assert reading.input_tokens == 1200, (api, reading)
        print(f"3. meter alone, {api.value}: {len(body) / 1e6:.0f} MB in {len(chunks)} chunks of 64 KiB:"
              f" {took / len(chunks) * 1e6:.1f} us per chunk, {len(body) / took / 1e6:.0f} MB/s")


async def main(calls: int, stream_mb: int) -> None:
    model, model_url = await spawn("--serve-model", "--stream-mb", str(stream_mb))
    plain, plain_url = await spawn("--serve-gateway", model_url)
    metered, metered_url = await spawn("--serve-gateway", model_url, "--metered")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await latencies(http, plain_url, 50)  # warm both paths
            await latencies(http, metered_url, 50)
            p, m = [], []
            for n in range(calls):  # in turns, each first every other time: both see the same load
                first, second = (p, plain_url), (m, metered_url)
                for values, url in (first, second) if n % 2 else (second, first):
                    values += await latencies(http, url, 1)
            added = [b - a for a, b in zip(p, m, strict=True)]
            print(f"1. latency per call, {calls} calls (ms): unmetered p50 {pct(p, 50):.3f} p99 {pct(p, 99):.3f};"
                  f" metered p50 {pct(m, 50):.3f} p99 {pct(m, 99):.3f};"
                  f" added p50 {pct(added, 50):.3f} p99 {pct(added, 99):.3f}")
            (a, [a_cpu]), (b, [b_cpu]) = (await throughput(http, plain_url, 1, plain.pid),
                                      await throughput(http, metered_url, 1, metered.pid))
            print(f"2. {stream_mb} MB streamed: unmetered {a:.0f} MB/s, metered {b:.0f} MB/s, ratio {b / a:.2f};"
                  f" CPU per GB: unmetered {a_cpu:.2f} s, metered {b_cpu:.2f} s")
    finally:
        for process in (metered, plain, model):
            process.terminate()
            await process.wait()
    meter_alone(stream_mb)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--stream-mb", type=int, default=32)
    parser.add_argument("--serve-model", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", metavar="MODEL_URL", help=argparse.SUPPRESS)
    parser.add_argument("--metered", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_model:
        asyncio.run(run_model(args.stream_mb))
    elif args.serve_gateway:
        asyncio.run(run_gateway(args.serve_gateway, args.metered))
    else:
        asyncio.run(main(args.calls, args.stream_mb))
