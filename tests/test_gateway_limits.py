"""What one run (or all of them together) may hold of the gateway, and where its proxy sends what
it is asked: a hostile agent must not take the bot's file descriptors or memory through it, nor
reach a host off its allowlist. The gateway's own listeners on the loopback, a real store, no
Docker: raw sockets that send nothing, tunnels that stay silent, and parallel model calls with one
valid run token."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from bot.gateway.grants import Grants
from bot.gateway.models import ModelProxy
from bot.gateway.observer import NoObserver
from bot.gateway.proxy import BLOCKED_KEPT, ELSEWHERE, Proxy, add_refused
from bot.report.sentences import egress_lines
from bot.settings import Settings
from bot.store import RunRequest, SqliteStore
from tests.helpers import model_api, serve, wait_for


@dataclass
class World:
    settings: Settings
    store: SqliteStore
    grants: Grants
    runs: list


@contextlib.asynccontextmanager
async def world(tmp_path, runs: int = 1, **gateway):
    settings = Settings(data_dir=tmp_path, gateway={"port": 0, "proxy_port": 0, **gateway})
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    started = []
    for number in range(1, runs + 1):
        run = await store.request_run(RunRequest(
            owner="acme", repo="widgets", number=number, is_pull=False, agent="claude", model="", pool="claude",
            review=False, task="t", trigger="comment", requested_by="bob"), trigger_key=f"k{number}")
        for state in ("preparing", "running"):
            run = await store.transition(run.id, state)
        started.append(run)
    try:
        yield World(settings, store, Grants(b"k" * 32, store), started)
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def proxy_on(w: World):
    """The gateway's proxy on the loopback: (the proxy, its port); the tests allow every destination."""
    proxy = Proxy(w.grants, lambda holder: [], w.settings.gateway)
    server = await proxy.serve("127.0.0.1", 0)
    try:
        yield proxy, server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def echo_server() -> tuple[asyncio.Server, int]:
    async def echo(reader, writer):
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def tunnel(port: int, token: str, destination: str):
    """``CONNECT destination`` with ``token``: (the proxy's answer line, reader, writer)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = base64.b64encode(f"run:{token}".encode()).decode()
    writer.write(f"CONNECT {destination} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    line = await asyncio.wait_for(reader.readline(), 5)
    if line.startswith(b"HTTP/1.1 200"):
        assert await reader.readline() == b"\r\n"
    return line, reader, writer


async def closed(reader: asyncio.StreamReader, within: float) -> bool:
    """Whether the other end closed the connection within ``within`` seconds."""
    try:
        return await asyncio.wait_for(reader.read(1), within) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_sockets_that_send_nothing_cannot_take_every_connection_and_a_tokened_tunnel_still_works(
        tmp_path, monkeypatch):
    """Past ``connections``, the silent ones waiting longest are dropped at once (a real client
    sends its head at once), so the proxy never holds more than its cap, and a run's tunnel gets in
    meanwhile and carries its bytes."""
    monkeypatch.setattr("bot.gateway.proxy.allowed", lambda allowlist, host, port: True)
    async with world(tmp_path, connections=20, head_timeout=30.0) as w, proxy_on(w) as (proxy, port):
        echo, echo_port = await echo_server()
        try:
            silent = [await asyncio.open_connection("127.0.0.1", port) for _ in range(60)]
            shut = await asyncio.gather(*(closed(r, 1.0) for r, _ in silent))
            assert sum(shut) >= 40 and not any(shut[-20:]), shut  # the oldest ones went, at once
            assert len(proxy.sockets.held) <= 20 and len(proxy.sockets.waiting) <= 20
            line, reader, writer = await tunnel(port, w.grants.token(w.runs[0], "agent"), f"127.0.0.1:{echo_port}")
            assert line.startswith(b"HTTP/1.1 200"), line
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            writer.close()
            for _, w_ in silent:
                w_.close()
            await wait_for(lambda: not proxy.sockets.held and not proxy.sockets.runs, timeout=5)
        finally:
            echo.close()


async def test_past_the_total_cap_of_tunnels_a_new_connection_is_closed_at_once_and_one_run_has_a_cap_of_its_own(
        tmp_path, monkeypatch):
    monkeypatch.setattr("bot.gateway.proxy.allowed", lambda allowlist, host, port: True)
    async with world(tmp_path, runs=3, connections=5, run_connections=2) as w, \
            proxy_on(w) as (proxy, port):
        echo, echo_port = await echo_server()
        try:
            tokens = [w.grants.token(run, "agent") for run in w.runs]
            destination = f"127.0.0.1:{echo_port}"
            held = [await tunnel(port, tokens[0], destination) for _ in range(2)]
            assert all(line.startswith(b"HTTP/1.1 200") for line, _, _ in held)
            line, _, writer = await tunnel(port, tokens[0], destination)  # a third one of the same run
            assert line.startswith(b"HTTP/1.1 429"), line
            writer.close()
            held += [await tunnel(port, t, destination) for t in (tokens[1], tokens[1], tokens[2])]
            assert all(line.startswith(b"HTTP/1.1 200") for line, _, _ in held)  # five open: the cap
            started = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await closed(reader, 1.0) and time.monotonic() - started < 1.0
            writer.close()
            for _, _, w_ in held[:2]:  # the first run's tunnels end: their slots come back
                w_.close()
            await wait_for(lambda: len(proxy.sockets.held) <= 3, timeout=5)
            again = [await tunnel(port, tokens[0], destination) for _ in range(2)]
            assert all(line.startswith(b"HTTP/1.1 200") for line, _, _ in again), again
            for _, _, w_ in held[2:] + again:
                w_.close()
            await wait_for(lambda: not proxy.sockets.held and not proxy.sockets.runs, timeout=5)
        finally:
            echo.close()


async def test_a_silent_head_and_a_silent_tunnel_are_closed_after_their_timeouts(tmp_path, monkeypatch):
    monkeypatch.setattr("bot.gateway.proxy.allowed", lambda allowlist, host, port: True)
    async with world(tmp_path, head_timeout=0.3, tunnel_idle_timeout=0.5) as w, proxy_on(w) as (proxy, port):
        echo, echo_port = await echo_server()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await closed(reader, 2.0)
            writer.close()
            line, reader, writer = await tunnel(port, w.grants.token(w.runs[0], "agent"), f"127.0.0.1:{echo_port}")
            assert line.startswith(b"HTTP/1.1 200")
            for _ in range(4):  # bytes flowing keep it open past the idle timeout
                await asyncio.sleep(0.2)
                writer.write(b"x")
                assert await asyncio.wait_for(reader.readexactly(1), 2) == b"x"
            started = time.monotonic()
            assert await closed(reader, 3.0)
            assert 0.3 < time.monotonic() - started < 2.0
            writer.close()
            await wait_for(lambda: not proxy.sockets.held and not proxy.sockets.runs, timeout=5)
        finally:
            echo.close()


class Counting(NoObserver):
    """Counts the calls whose body was read (``admit`` comes right after)."""

    def __init__(self) -> None:
        self.admitted = 0

    async def admit(self, grant, api, body):
        self.admitted += 1
        return None


async def test_one_runs_parallel_model_calls_past_its_cap_wait_unread_and_each_completes(tmp_path, monkeypatch):
    """Each waiting call's body stays in the kernel's buffers, not in the bot's memory; a call whose
    client goes away, whether waiting or answered, gives its place back."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    release = asyncio.Event()
    now = peak = 0

    async def held(request: web.Request) -> web.Response:
        nonlocal now, peak
        now += 1
        peak = max(peak, now)
        try:
            await release.wait()
            return web.json_response({"type": "message", "content": []})
        finally:
            now -= 1

    runner, upstream = await model_api(held)
    async with world(tmp_path, run_model_calls=3) as w:
        settings = w.settings.model_copy(update={"base_urls": {"claude": upstream}})
        observer = Counting()
        models = ModelProxy(settings, w.grants, observer, lambda run_id, reason: None)
        gateway, url = await serve(models.app())
        url = f"{url}/claude/{w.grants.token(w.runs[0], 'agent')}/v1/messages"
        try:
            async with aiohttp.ClientSession() as http:
                async def call() -> int:
                    async with http.post(url, data=b'{"pad": "' + b"x" * 1_000_000 + b'"}',
                                         headers={"x-api-key": "t"}) as answer:
                        await answer.read()
                        return answer.status

                calls = [asyncio.ensure_future(call()) for _ in range(12)]
                await wait_for(lambda: now == 3, timeout=5)
                await asyncio.sleep(0.3)
                assert (now, peak, observer.admitted) == (3, 3, 3)  # nine wait, their bodies unread
                gone = calls.pop()  # a waiting client hangs up (its socket unread, noticed at its turn)
                gone.cancel()
                await asyncio.sleep(0.1)
                release.set()
                assert await asyncio.wait_for(asyncio.gather(*calls), 10) == [200] * 11
                assert peak == 3 and observer.admitted in (11, 12)
                await wait_for(lambda: not models.calls, timeout=5)  # every place given back
                release.clear()
                calls = [asyncio.ensure_future(call()) for _ in range(3)]
                await wait_for(lambda: now == 3, timeout=5)
                for c in calls:  # clients being answered hang up
                    c.cancel()
                release.set()
                await wait_for(lambda: not models.calls, timeout=5)
                assert await asyncio.wait_for(call(), 5) == 200
        finally:
            await gateway.cleanup()
            await models.close()
            await runner.cleanup()


async def test_a_call_refused_or_failed_gives_its_place_back(tmp_path, monkeypatch):
    """With one place per run: a body too large (413), then an upstream that cannot be reached (502),
    each answered, and the next call gets the place."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    async with world(tmp_path, run_model_calls=1, max_request_bytes=1000) as w:
        settings = w.settings.model_copy(update={"base_urls": {"claude": "http://127.0.0.1:9"}})
        models = ModelProxy(settings, w.grants, NoObserver(), lambda run_id, reason: None)
        gateway, url = await serve(models.app())
        url = f"{url}/claude/{w.grants.token(w.runs[0], 'agent')}/v1/messages"
        try:
            async with aiohttp.ClientSession() as http:
                for body, status in ((b"x" * 5000, 413), (b"{}", 502), (b"{}", 502)):
                    async with http.post(url, data=body, headers={"x-api-key": "t"}) as answer:
                        assert answer.status == status
                    await wait_for(lambda: not models.calls, timeout=5)
        finally:
            await gateway.cleanup()
            await models.close()


def test_a_misspelt_or_renamed_limit_is_refused_with_its_name():
    with pytest.raises(ValueError, match="proxy_connections"):  # the name it had before it covered both listeners
        Settings(gateway={"proxy_connections": 100})


@contextlib.asynccontextmanager
async def model_port(w: World, upstream: str):
    """The gateway's model listener on the loopback, as the gateway serves it: (the model proxy, its root URL)."""
    settings = w.settings.model_copy(update={"base_urls": {"claude": upstream}})
    models = ModelProxy(settings, w.grants, NoObserver(), lambda run_id, reason: None)
    server = await models.serve("127.0.0.1", 0)
    try:
        yield models, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await models.close()


async def answered(request: web.Request) -> web.Response:
    return web.json_response({"type": "message", "content": []})


async def test_sockets_that_send_nothing_to_the_model_port_cannot_take_every_connection(tmp_path, monkeypatch):
    """The model listener and the proxy share one cap: past it the silent sockets waiting longest go
    at once, and a run's model call (and its tunnel) still gets in."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    monkeypatch.setattr("bot.gateway.proxy.allowed", lambda allowlist, host, port: True)
    runner, upstream = await model_api(answered)
    async with world(tmp_path, connections=20, head_timeout=30.0) as w, model_port(w, upstream) as (models, url):
        try:
            host, port = url.removeprefix("http://").split(":")
            silent = [await asyncio.open_connection(host, int(port)) for _ in range(60)]
            shut = await asyncio.gather(*(closed(r, 1.0) for r, _ in silent))
            assert sum(shut) >= 40 and not any(shut[-20:]), shut  # the oldest ones went, at once
            token = w.grants.token(w.runs[0], "agent")
            async with aiohttp.ClientSession() as http:
                async with http.post(f"{url}/claude/{token}/v1/messages", data=b"{}",
                                     headers={"x-api-key": "t"}) as answer:
                    assert answer.status == 200
            assert len(models.sockets.held) <= 20
            for _, writer in silent:
                writer.close()
            await wait_for(lambda: not models.sockets.held and not models.sockets.runs, timeout=5)
        finally:
            await runner.cleanup()


async def test_the_model_port_closes_a_connection_that_sends_no_head_in_time_fresh_or_kept_alive(
        tmp_path, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    runner, upstream = await model_api(answered)
    async with world(tmp_path, head_timeout=0.3) as w, model_port(w, upstream) as (models, url):
        try:
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(b"POST /claude/")  # half a head, then nothing
            assert await closed(reader, 2.0)
            writer.close()
            reader, writer = await asyncio.open_connection(host, int(port))
            token = w.grants.token(w.runs[0], "agent")
            writer.write(f"POST /claude/{token}/v1/messages HTTP/1.1\r\nHost: g\r\nx-api-key: t\r\n"
                         "Content-Length: 2\r\n\r\n{}".encode())
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
            started = time.monotonic()  # kept alive after its answer, and silent
            while await asyncio.wait_for(reader.read(65536), 3.0):
                pass
            assert time.monotonic() - started < 2.0
            writer.close()
            await wait_for(lambda: not models.sockets.held, timeout=5)
        finally:
            await runner.cleanup()


async def test_one_runs_model_calls_past_its_connections_are_refused_and_another_run_still_calls(
        tmp_path, monkeypatch):
    """Calls waiting their turn hold a socket each: past ``run_connections`` (the proxy's tunnels and
    the model calls of a run together) one more gets 429, at once, and other runs are not held up."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    release = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        await release.wait()
        return await answered(request)

    runner, upstream = await model_api(held)
    async with world(tmp_path, runs=2, run_connections=4, run_model_calls=2) as w, \
            model_port(w, upstream) as (models, url):
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
                async def call(run) -> int:
                    async with http.post(f"{url}/claude/{w.grants.token(run, 'agent')}/v1/messages", data=b"{}",
                                         headers={"x-api-key": "t"}) as answer:
                        await answer.read()
                        return answer.status

                first = [asyncio.ensure_future(call(w.runs[0])) for _ in range(4)]
                await wait_for(lambda: models.sockets.runs[w.runs[0].id] == 4, timeout=5)
                assert await asyncio.wait_for(asyncio.gather(*(call(w.runs[0]) for _ in range(2))), 5) == [429, 429]
                other = asyncio.ensure_future(call(w.runs[1]))
                await wait_for(lambda: models.sockets.runs[w.runs[1].id] == 1, timeout=5)
                release.set()
                assert await asyncio.wait_for(asyncio.gather(*first, other), 10) == [200] * 5
            await wait_for(lambda: not models.sockets.runs and not models.calls, timeout=5)
        finally:
            await runner.cleanup()


async def test_endless_refused_hosts_keep_a_runs_record_bounded_and_every_refusal_counted(tmp_path):
    """A CONNECT may name any host: the record (in the store, the API's run view, the status comment)
    keeps the first BLOCKED_KEPT apart and counts the rest together."""
    async with world(tmp_path) as w, proxy_on(w) as (proxy, port):
        token = w.grants.token(w.runs[0], "agent")
        for batch in range(3):
            answers = await asyncio.gather(*(tunnel(port, token, f"h{batch}-{i}.example.org:443") for i in range(100)))
            assert all(line.startswith(b"HTTP/1.1 403") for line, _, _ in answers)
            for _, _, writer in answers:
                writer.close()
        counted = proxy.take_blocked(w.runs[0].id)
        assert len(counted) == BLOCKED_KEPT + 1 and sum(counted.values()) == 300
        assert counted[ELSEWHERE] == 300 - BLOCKED_KEPT
        record = dict(counted)
        add_refused(record, "another.example.org:443", 5)  # a later flush into the stored record
        assert len(record) == BLOCKED_KEPT + 1 and record[ELSEWHERE] == 300 - BLOCKED_KEPT + 5
        [line] = [x for x in egress_lines({"blocked": record}) if x]
        assert line.count("1 connection to") == 10 and line.endswith(f", and {300 - 10 + 5} more elsewhere."), line


async def test_a_plain_http_request_goes_to_the_host_it_names_whatever_its_host_header_says(tmp_path, monkeypatch):
    """The allowlist is checked on the URL's host: a Host header naming another site would have a
    shared front (a CDN) serve that other site instead (domain fronting)."""
    monkeypatch.setattr("bot.gateway.proxy.allowed", lambda allowlist, host, port: host == "127.0.0.1")
    seen: list[str] = []

    async def site(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Host", ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", site)
    runner, url = await serve(app)
    async with world(tmp_path) as w, proxy_on(w) as (proxy, port):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            auth = base64.b64encode(f"run:{w.grants.token(w.runs[0], 'agent')}".encode()).decode()
            writer.write(f"GET {url}/simple/ HTTP/1.1\r\nHost: paste.example.org\r\n"
                         f"Proxy-Authorization: Basic {auth}\r\n\r\n".encode())
            assert (await asyncio.wait_for(reader.readline(), 5)).startswith(b"HTTP/1.1 200")
            writer.close()
            assert seen == [url.removeprefix("http://")]
        finally:
            await runner.cleanup()
