"""The model gateway and the closed network (issue #14), with real containers, a real Docker network,
real iptables rules and canary HTTP servers on this host's own addresses.

A canary is reached with ``egress = "open"`` and never with ``egress = "gateway"`` (the default);
an allowlisted host is reached through the gateway's proxy, another one is refused and reported;
a decoy key the bot holds appears nowhere in what its container could read.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import subprocess
import uuid

import aiohttp
import pytest
from aiohttp import web

from bot.gateway import firewall
from bot.executor.docker import HOLDER_LABEL, DockerExecutor
from bot.gateway.observer import Api
from bot.gateway.service import dismantle, network_names
from bot.gateway.vendors import route_of
from bot.report.markup import plain
from bot.settings import Settings
from bot.workspace import layout
from bot.store import ACTIVE
from tests.fakemodel import FakeModel
from tests.harness import AGENT_KEYS
from tests.helpers import model_api, wait_for

pytestmark = pytest.mark.docker

DECOY = "sk-ant-decoy-7f3a9c2e51b84d06a1e2"
ADMIN = "admin-token-for-the-gateway-tests"


class Canary:
    """An HTTP server that counts what reaches it."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.hits: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Canary:
        async def hit(request: web.Request) -> web.Response:
            self.hits.append(request.path)
            return web.Response(text=f"canary {self.host}")

        app = web.Application()
        app.router.add_get("/{tail:.*}", hit)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/canary"

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()


def host_address() -> str:
    """This machine's own address on its way out (not loopback, not a Docker bridge)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.254", 9))  # UDP: nothing is sent, the kernel only picks the route
        return s.getsockname()[0]


def docker0() -> str:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "docker0"], capture_output=True, text=True).stdout
    return re.search(r"inet (\S+)/", out)[1]


@pytest.fixture
async def canaries():
    started = [await Canary(h).start() for h in ("127.0.0.1", docker0(), host_address())]
    yield started
    for c in started:
        await c.close()


def probe(urls: list[str]) -> list[str]:
    """A custom agent's argv: fetch each URL directly (no proxy), then resolve a public name."""
    script = "".join(f"curl -s -m 1 --noproxy '*' -o /dev/null -w '{u} %{{http_code}}\\n' {u} || echo '{u} refused';"
                     for u in urls)
    return ["sh", "-c", script + "grep '^options' /etc/resolv.conf; getent hosts pypi.org || echo 'dns: none'"]


async def finished(bot, within: float = 120.0):
    async def ended():
        runs = await bot.store.runs()
        if not runs or runs[-1].state in ACTIVE or runs[-1].state == "queued":
            return None
        run = runs[-1]
        return run if (await bot.store.reported(run.id)).get("version") == run.version else None

    return await bot.wait_for(ended, timeout=within)


def status(forge, repo, number) -> str:
    return "\n".join(c.body for c in forge.comments(repo, number) if c.poster.login == "dispatchbot")


async def dispatch(world, agent: str, body: str = "Probe."):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    issue = await forge.create_issue(repo, bob, title="Probe", body=body)
    await forge.set_labels(repo, issue.number, bob, [f"dispatch:{agent}"])
    return issue


@pytest.mark.parametrize(("egress", "warm"), [("gateway", 1), ("gateway", 0), ("open", 1)])
async def test_canaries_on_this_host_are_reached_only_with_egress_open(world, make_bot, real_agent_image, canaries,
                                                                       egress, warm):
    """Agent and QA containers alike, in a namespace made ready ahead or joining the network at their
    start; "open" uses the host's network so that even loopback is in reach."""
    urls = [c.url for c in canaries] + ["http://169.254.169.254/latest/meta-data/"]
    bot = await make_bot(
        egress=egress, container_network="host" if egress == "open" else None, image=real_agent_image.tag,
        gateway={"port": 0, "proxy_port": 0, "warm": warm},
        agents={"probe": {"argv": probe(urls)}}, qa={"acme/widgets": [probe(urls)]},
        limits={"memory": "512m", "cpus": 1.0, "pids": 256, "timeout": 100.0, "grace": 1.0},
    )
    issue = await dispatch(world, "probe")
    run = await finished(bot)
    log = run.result.log_tail
    if egress == "gateway":
        gateway = bot.services.gateway
        other_port = Canary(gateway.address)  # the host's other ports on the bot's own bridge
        await other_port.start()
        try:
            assert [c.hits for c in canaries] == [[], [], []], log
            assert "dns: none" in log and "pypi.org" not in log.replace("getent hosts pypi.org", ""), log
            assert "timeout:1 attempts:1" in log, log  # and a lookup fails soon
            assert run.result.egress["mode"] == "gateway"
            assert "Egress is open" not in status(world["forge"], world["repo"], issue.number)
        finally:
            await other_port.close()
    else:
        # the agent's container and the QA container each reached every canary once
        assert [len(c.hits) for c in canaries] == [2, 2, 2], (log, run.reason)
        assert "Egress is open" in status(world["forge"], world["repo"], issue.number)


def holders(instance: str) -> list[str]:
    """The ids of this bot's network holders on the engine."""
    out = subprocess.run(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label={HOLDER_LABEL}={instance}"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


async def test_a_runs_containers_each_join_a_namespace_made_ready_ahead_which_goes_with_them(
        world, make_bot, real_agent_image):
    """The agent's and the QA container's host names are those of two different holders (a joined
    namespace's host name is its holder's), each removed with its container; one is ready again."""
    show = ["sh", "-c", "echo host=$(hostname)"]
    bot = await make_bot(image=real_agent_image.tag, agents={"probe": {"argv": show}}, qa={"acme/widgets": [show]})
    instance = bot.settings.instance
    ready = await wait_for(lambda: bot.services.gateway.holders.ready, timeout=30)
    assert list(ready) == holders(instance)
    await dispatch(world, "probe")
    run = await finished(bot)
    assert run.state == "completed", (run.reason, run.result.log_tail)
    meta = bot.services.workspaces.directory("acme", "widgets", run.workspace_key).meta
    agent_host = re.search(r"host=(\w+)", (meta / layout.CONTAINER_LOG).read_text())[1]
    qa_host = re.search(r"host=(\w+)", (meta / layout.QA_LOG).read_text())[1]
    assert ready[0].startswith(agent_host) and qa_host != agent_host
    left = await wait_for(lambda: (h := holders(instance)) and not any(x.startswith((agent_host, qa_host)) for x in h)
                          and h, timeout=30)
    assert len(left) == 1  # the next run's, ready


async def test_holders_a_crash_left_go_at_the_next_start_and_a_dead_one_is_not_used(world, make_bot,
                                                                                      real_agent_image):
    settings = Settings(data_dir=world["tmp"] / "bot")
    network, _ = network_names(settings)
    subprocess.run(["docker", "network", "create", "--internal", "-o",
                    f"com.docker.network.bridge.name=dbot-{settings.instance}", "-o",
                    "com.docker.network.bridge.enable_icc=false", network], capture_output=True, check=True)
    subprocess.run(["docker", "run", "-d", "--network", network, "--label", f"{HOLDER_LABEL}={settings.instance}",
                    real_agent_image.tag, "sleep", "600"], capture_output=True, text=True, check=True)
    bot = await make_bot(image=real_agent_image.tag, agents={"probe": {"argv": ["sh", "-c", "curl -s -o /dev/null -w 'gateway %{http_code}' $HTTPS_PROXY"]}})
    ready = await wait_for(lambda: bot.services.gateway.holders.ready, timeout=30)
    assert holders(settings.instance) == list(ready)  # the stray one is gone
    subprocess.run(["docker", "kill", *ready], capture_output=True, check=True)  # the one ready dies
    await dispatch(world, "probe")
    run = await finished(bot)
    assert run.state == "completed" and "gateway 4" in run.result.log_tail, (run.reason, run.result.log_tail)
    assert ready[0] not in holders(settings.instance)


async def test_holders_come_back_once_they_can_start_again(world, make_bot, real_agent_image):
    """None can start while the default image is missing; the first run after it is there joins the
    network itself, and a holder is ready for the next."""
    tag = f"dispatchbot-holder-test:{uuid.uuid4().hex[:8]}"
    bot = await make_bot(image=tag, agents={"probe": {"argv": ["true"]}})
    assert bot.services.gateway.holders.ready == () and holders(bot.settings.instance) == []
    subprocess.run(["docker", "tag", real_agent_image.tag, tag], capture_output=True, check=True)
    try:
        await dispatch(world, "probe")
        run = await finished(bot)
        assert run.state == "completed", (run.reason, run.result.log_tail)
        ready = await wait_for(lambda: bot.services.gateway.holders.ready, timeout=30)
        assert list(ready) == holders(bot.settings.instance)
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True)


async def test_only_the_gateways_ports_are_open_on_its_bridge(world, make_bot, real_agent_image):
    """Another port of the host on the bot's own bridge address is closed to containers."""
    bot = await make_bot(image=real_agent_image.tag, agents={"probe": {"argv": ["true"]}})
    gateway = bot.services.gateway
    await gateway.ready()
    other = await Canary(gateway.address).start()
    try:
        bot.settings.agents["probe"].argv[:] = probe([other.url, f"http://{gateway.address}:{gateway.port}/x"])
        await dispatch(world, "probe")
        run = await finished(bot)
        assert other.hits == [], run.result.log_tail
        assert f"{gateway.address}:{gateway.port}/x 404" in run.result.log_tail  # the gateway answers
    finally:
        await other.close()


async def test_an_allowlisted_host_is_reached_through_the_proxy_and_others_are_refused_and_reported(
        world, make_bot, real_agent_image):
    registry = await Canary("127.0.0.1").start()  # "localhost:<port>" stands for a package registry
    try:
        script = (f"curl -s -m 5 -o /dev/null -w 'registry %{{http_code}}\\n' http://localhost:{registry.port}/simple/;"
                  "curl -s -m 5 -o /dev/null https://paste.example.org/ || true;"
                  "curl -s -m 5 -o /dev/null https://paste.example.org/again || true;"
                  f"curl -s -m 5 -o /dev/null http://127.0.0.1:{registry.port}/by-address || true")
        bot = await make_bot(image=real_agent_image.tag, agents={"probe": {"argv": ["sh", "-c", script]}},
                             egress_allow={"acme/widgets": [f"localhost:{registry.port}"]}, admin_token=ADMIN)
        issue = await dispatch(world, "probe")
        run = await finished(bot)
        assert registry.hits == ["/simple/"], run.result.log_tail
        assert "registry 200" in run.result.log_tail
        blocked = {"paste.example.org:443": 2, f"127.0.0.1:{registry.port}": 1}
        assert run.result.egress["blocked"] == blocked
        shown = f"Blocked: 2 connections to {plain('paste.example.org:443')}, 1 connection to {plain('127.0.0.1')}"
        assert shown in status(world["forge"], world["repo"], issue.number)
        async with aiohttp.ClientSession() as http:  # the API's run view lists them too
            headers = {"Authorization": f"Bearer {ADMIN}"}
            async with http.get(f"{bot.url}/api/runs/{run.id}", headers=headers) as answer:
                assert (await answer.json())["egress"] == {"mode": "gateway", "credentials_inside": False,
                                                           "blocked": blocked, "upstream": ""}
    finally:
        await registry.close()


async def test_a_decoy_key_appears_nowhere_the_agent_can_read(world, make_bot, agent_image, monkeypatch):
    """The scripted agent dumps env, /proc, HOME, the workspace and the gateway's answers into a file the
    run pushes; the decoy key is in none of it, nor in the container's inspect data, nor on the Forge,
    while the model behind the gateway did receive it."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", DECOY)
    model = FakeModel()
    await model.start()
    try:
        bot = await make_bot(image=agent_image, base_urls={"claude": model.url},
                             limits={"memory": "256m", "cpus": 1.0, "pids": 256, "timeout": 60.0, "grace": 1.0})
        inspected: list[str] = []

        async def inspect_running():
            runs = await bot.store.runs()
            if runs and runs[-1].container_id:
                out = subprocess.run(["docker", "inspect", runs[-1].container_id], capture_output=True, text=True)
                inspected.append(out.stdout)
            return runs and runs[-1].state not in ("queued", "preparing", "running")

        issue = await dispatch(world, "claude", body="scenario:dump")
        await bot.wait_for(inspect_running, timeout=60)
        run = await finished(bot)
        assert run.state == "completed", (run.reason, run.result)
        dump = world["forge"].file_at(world["repo"], run.branch, "DUMP.txt").decode(errors="replace")
        assert "== env" in dump and "ANTHROPIC_API_KEY=dbr-" in dump and "/proc/1/environ" in dump
        assert "== gateway" in dump and "this token is not valid" in dump  # the gateway's answers are in it
        assert DECOY not in dump and DECOY[::-1] not in dump
        assert inspected and not any(DECOY in text for text in inspected)
        assert DECOY not in status(world["forge"], world["repo"], issue.number)
        assert all(DECOY not in (p.issue.body or "") for p in world["forge"].pulls(world["repo"]))
        assert {r.headers.get("x-api-key") for r in model.calls("/v1/messages")} == {DECOY}
    finally:
        await model.close()


async def test_refused_tokens_get_401_that_says_do_not_retry(world, engine_bot):
    bot = await engine_bot()
    gateway = bot.services.gateway
    await gateway.ready()
    await dispatch(world, "claude", body="scenario:slow-ok:1")
    run = await finished(bot)  # ended: its token is no good any more
    base = f"http://{gateway.address}:{gateway.port}"
    token = gateway.grants.token(run, "agent")
    forged = token[:-4] + "0000"
    async with aiohttp.ClientSession() as http:
        for path in (f"/claude/{token}/v1/messages", f"/claude/{forged}/v1/messages", "/claude/nonsense/v1/messages",
                     f"/codex/{token}/v1/responses"):
            async with http.post(base + path, json={}) as answer:
                assert answer.status == 401, path
                assert answer.headers["x-should-retry"] == "false"
                assert "dispatchbot gateway" in (await answer.json())["error"]["message"]
    reader, writer = await asyncio.open_connection(gateway.address, gateway.proxy_port)
    writer.write(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n")
    assert (await reader.readline()).startswith(b"HTTP/1.1 407")
    writer.close()


async def test_answers_stream_through_chunk_by_chunk_and_requests_are_bounded(world, engine_bot, monkeypatch):
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await release.wait()
        await response.write(b"data: second\n\n")
        return response

    runner, url = await model_api(slow)
    try:
        bot = await engine_bot(base_urls={"claude": url}, gateway={"port": 0, "proxy_port": 0,
                                                                         "max_request_bytes": 4096})
        await dispatch(world, "claude", body="scenario:hang")
        run = await bot.wait_for(lambda: _running(bot))
        gateway = bot.services.gateway
        url = f"http://{gateway.address}:{gateway.port}/claude/{gateway.grants.token(run, 'agent')}/v1/messages"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, json={}) as answer:
                assert answer.status == 200
                assert await answer.content.readuntil(b"\n\n") == b"data: first\n\n"  # before the rest exists
                release.set()
                assert await answer.content.read() == b"data: second\n\n"
            async with http.post(url, data=b"x" * 5000) as answer:
                assert answer.status == 413
    finally:
        await runner.cleanup()


# (agent, the key header its CLI sends, method, path): what a run token must not reach with the real
# key. Batches run on after the run, unmetered and outside its budget; embeddings, images and the
# legacy completions are model calls no meter reads; the rest read or change the whole account
# (stored completions hold other runs' prompts and their repositories' code).
NOT_MODEL_CALLS = [
    ("mine", "x-api-key", "POST", "/v1/messages/batches"),
    ("mine", "x-api-key", "GET", "/v1/messages/batches"),
    ("mine", "x-api-key", "GET", "/v1/files"),
    ("mine", "authorization", "POST", "/v1/batches"),
    ("mine", "authorization", "GET", "/v1/files"),
    ("mine", "authorization", "GET", "/v1/chat/completions"),
    ("mine", "authorization", "GET", "/v1/responses/resp_1"),
    ("mine", "authorization", "POST", "/v1/embeddings"),
    ("mine", "authorization", "POST", "/v1/images/generations"),
    ("mine", "authorization", "POST", "/v1/completions"),
    ("mine", "x-goog-api-key", "POST", "/v1beta/models/gemini-2.5-flash:batchGenerateContent"),
    ("mine", "x-goog-api-key", "POST", "/v1beta/models/gemini-2.5-flash:embedContent"),
    ("mine", "x-goog-api-key", "GET", "/v1beta/files"),
    ("local", "", "POST", "/api/pull"),
    ("local", "", "DELETE", "/api/delete"),
    ("local", "", "POST", "/v1/embeddings"),
]
# ...and what its CLI does need, which still reaches the model with the real key
MODEL_CALLS = [
    ("mine", "x-api-key", "POST", "/v1/messages"),
    ("mine", "x-api-key", "HEAD", "/api/hello"),
    ("mine", "authorization", "POST", "/v1/responses"),
    ("mine", "authorization", "POST", "/v1/chat/completions"),
    ("mine", "authorization", "GET", "/v1/models"),
    ("mine", "x-goog-api-key", "POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent"),
    ("local", "", "GET", "/api/tags"),
    ("local", "", "POST", "/v1/responses"),
]


async def test_a_run_token_reaches_its_vendors_model_calls_and_nothing_else_of_its_api(world, engine_bot):
    """A hostile agent holds its run's token: with it, the gateway forwards the calls its CLI makes
    (a model call, a probe, a model list) and refuses everything else of the vendor's API before the
    key is added, 404 with ``x-should-retry: false``; each refusal is counted in the run's record."""
    model = FakeModel()
    await model.start()
    try:
        bot = await engine_bot(base_urls={"mine": model.url}, ollama_url=model.url, agents={"mine": {
            "argv": ["sleep", "60"], "env": ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"],
            "base_url_env": "MINE_URL"}})
        await dispatch(world, "mine")
        await dispatch(world, "local", body="scenario:hang")
        runs = await bot.wait_for(lambda: _all_running(bot, 2))
        gateway = bot.services.gateway
        base = f"http://{gateway.address}:{gateway.port}"
        tokens = {run.agent: gateway.grants.token(run, "agent") for run in runs}
        body = {"model": "m", "stream": True, "messages": [], "input": [], "contents": []}

        async def call(http, agent, header, method, path):
            headers = {header: ("Bearer " if header == "authorization" else "") + tokens[agent]} if header else {}
            async with http.request(method, f"{base}/{agent}/{tokens[agent]}{path}", headers=headers,
                                    json=None if method in ("GET", "HEAD") else body) as answer:
                return answer.status, answer.headers, await answer.read()

        async with aiohttp.ClientSession() as http:
            refused = [await call(http, *c) for c in NOT_MODEL_CALLS]
            allowed = [await call(http, *c) for c in MODEL_CALLS]
        seen = {(r.method, r.path) for r in model.requests}
        assert seen == {(m, p) for _, _, m, p in MODEL_CALLS}  # none of the others reached it
        for (_, _, method, path), (status, headers, raw) in zip(NOT_MODEL_CALLS, refused, strict=True):
            assert (status, headers.get("x-should-retry")) == (404, "false"), (method, path, status)
            assert json.loads(raw)["error"]["message"].startswith("dispatchbot gateway: "), (method, path)
        assert [status for status, _, _ in allowed] == [200] * len(MODEL_CALLS)
        keys = {"x-api-key": AGENT_KEYS["ANTHROPIC_API_KEY"], "authorization": f"Bearer {AGENT_KEYS['OPENAI_API_KEY']}",
                "x-goog-api-key": AGENT_KEYS["GEMINI_API_KEY"]}
        for r in model.requests:  # with the real key, never the token
            sent = {k.lower(): v for k, v in r.headers.items()}
            assert all(sent.get(h, key) == key for h, key in keys.items()), r
        mine = next(run for run in runs if run.agent == "mine")
        expected = {f"{m} {p} ({v} API)": 1 for a, h, m, p in NOT_MODEL_CALLS if a == "mine"
                    for v in [{"x-api-key": "anthropic", "authorization": "openai", "x-goog-api-key": "gemini"}[h]]}
        recorded = await bot.wait_for(lambda: _blocked(bot, mine.id, len(expected)))
        assert recorded == expected
    finally:
        await model.close()


def test_a_call_is_forwarded_only_when_its_whole_path_is_one_the_cli_makes():
    """What a client library would normalise before sending, as the gateway may see it (decoded)."""
    assert route_of("anthropic", "POST", "/v1/messages").api is Api.ANTHROPIC_MESSAGES
    assert route_of("gemini", "POST", "/v1beta/models/gemini-2.5-pro:generateContent").api is Api.GEMINI
    assert route_of("openai", "POST", "/chat/completions").api is Api.CHAT_COMPLETIONS  # /v1 in base_urls
    assert route_of("openai", "GET", "/v1/models").api is Api.OTHER
    assert route_of("ollama", "GET", "/v1/models/devstral:24b").api is Api.OTHER
    for vendor, method, path in [
        ("anthropic", "POST", "/v1/messages?x=1"), ("anthropic", "POST", "/v1/messages/"),
        ("anthropic", "POST", "/v1/messages\n"), ("anthropic", "POST", "/x/v1/messages"),
        ("anthropic", "post", "/v1/messages"), ("openai", "GET", "/v1/models/../files"),
        ("openai", "GET", "/v1/models/.."), ("openai", "POST", "/v1/messages"),
        ("gemini", "POST", "/v1beta/models/../../v1beta/files:generateContent"),
        ("gemini", "POST", "/v1beta/models/m:batchGenerateContent:generateContent"),
        ("coderabbit", "POST", "/v1/messages"),
    ]:
        assert route_of(vendor, method, path) is None, (vendor, method, path)


async def _all_running(bot, count: int):
    runs = [r for r in await bot.store.runs() if r.state == "running"]
    return runs if len(runs) == count else None


async def _blocked(bot, run_id: int, count: int):
    run = await bot.store.get(run_id)
    blocked = run.result.egress.get("blocked") or {}
    return blocked if len(blocked) >= count else None


async def connect(gateway, token: str, destination: str) -> bytes:
    """The proxy's first answer line to ``CONNECT destination`` with ``token``."""
    reader, writer = await asyncio.open_connection(gateway.address, gateway.proxy_port)
    auth = base64.b64encode(f"run:{token}".encode()).decode()
    writer.write(f"CONNECT {destination} HTTP/1.1\r\nProxy-Authorization: Basic {auth}\r\n\r\n".encode())
    line = await reader.readline()
    writer.close()
    return line


async def test_a_run_with_its_credentials_inside_reaches_only_its_vendors_hosts(world, engine_bot, tmp_path):
    creds = tmp_path / "claude-login"
    creds.mkdir()
    (creds / ".credentials.json").write_text("{}")
    bot = await engine_bot(credentials={"claude": [str(creds)]}, egress_allow={"acme/widgets": ["example.org"]})
    issue = await dispatch(world, "claude", body="scenario:slow-ok:3")
    run = await bot.wait_for(lambda: _running(bot))
    gateway = bot.services.gateway
    agent, qa = gateway.grants.token(run, "agent"), gateway.grants.token(run, "qa0")
    assert (await connect(gateway, agent, "pypi.org:443")).startswith(b"HTTP/1.1 403")
    assert (await connect(gateway, agent, "example.org:443")).startswith(b"HTTP/1.1 403")
    # allowed: the proxy tries (this machine has no route to it, so 502 or a tunnel, never 403)
    assert not (await connect(gateway, agent, "api.anthropic.com:443")).startswith(b"HTTP/1.1 403")
    assert not (await connect(gateway, qa, "pypi.org:443")).startswith(b"HTTP/1.1 403")  # QA: the registries
    run = await finished(bot)
    assert run.result.egress["credentials_inside"] is True
    assert "credentials (its credential files, or a key its CLI cannot take from the gateway) were inside its " \
           "container" in status(world["forge"], world["repo"], issue.number)


async def _running(bot):
    runs = await bot.store.runs()
    return runs[-1] if runs and runs[-1].state == "running" else None


async def test_the_network_and_its_firewall_go_when_the_bot_stops(world, make_bot):
    bot = await make_bot()
    await bot.services.gateway.ready()
    network, bridge = network_names(bot.settings)
    rules = subprocess.run(["iptables", "-S", "INPUT"], capture_output=True, text=True).stdout
    assert f"-i {bridge} -j {firewall.chain_name(bridge)}" in rules
    await bot.stop()
    assert subprocess.run(["docker", "network", "inspect", network], capture_output=True).returncode != 0
    assert bridge not in subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    assert bridge not in subprocess.run(["ip6tables", "-S"], capture_output=True, text=True).stdout




async def test_a_second_sigterm_while_the_bot_stops_does_not_leave_its_network_behind(world):
    """An impatient stop (a second SIGTERM, or Ctrl-C twice) used to cut the stop short: the network
    and its iptables chains stayed until the next start."""
    from tests.process import BotProcess

    bot = BotProcess(world["forge"].url, world["bot"].token, world["tmp"] / "data")
    await bot.start()
    network, bridge = network_names(Settings(data_dir=bot.data_dir))
    await wait_for(lambda: subprocess.run(["docker", "network", "inspect", network], capture_output=True).returncode == 0)
    try:
        bot.proc.terminate()
        await asyncio.sleep(0.05)
        bot.proc.terminate()
        await asyncio.to_thread(bot.proc.wait, 30)
        assert subprocess.run(["docker", "network", "inspect", network], capture_output=True).returncode != 0
        assert bridge not in subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
    finally:
        await bot.stop()
        executor = DockerExecutor()
        try:
            await dismantle(executor, Settings(data_dir=bot.data_dir))
        finally:
            await executor.close()


async def test_refused_connections_survive_a_restart_of_the_bot_in_the_middle_of_a_run(world, real_agent_image):
    """Two refusals, kill -9 of the bot, a restart that re-adopts the run, a third refusal: the run's
    record has all three, because the first two reached the store while the run was going."""
    from tests.harness import free_port
    from tests.process import BotProcess
    from tests.test_crash_engine import our_containers

    up = 'curl -s -m 1 -o /dev/null "$HTTPS_PROXY"'  # the gateway answers (its port is open)
    script = ("curl -s -m 5 -o /dev/null https://paste.example.org/ || true;"
              "curl -s -m 5 -o /dev/null https://paste.example.org/again || true;"
              f"while {up}; do sleep 0.2; done; until {up}; do sleep 0.2; done;"  # the bot gone, then back
              "curl -s -m 5 -o /dev/null https://later.example.org/ || true")
    env = {"DISPATCHBOT_IMAGE": real_agent_image.tag, "DISPATCHBOT_LIMITS": json.dumps({"timeout": 120.0, "grace": 1.0}),
           "DISPATCHBOT_AGENTS": json.dumps({"probe": {"argv": ["sh", "-c", script]}}),
           # the same ports after the restart: the re-adopted container keeps its proxy address
           "DISPATCHBOT_GATEWAY__PORT": str(free_port()), "DISPATCHBOT_GATEWAY__PROXY_PORT": str(free_port())}
    bot = BotProcess(world["forge"].url, world["bot"].token, world["tmp"] / "data", **env)
    await bot.start()

    def record() -> tuple[str, dict]:
        rows = bot.query("SELECT state, result FROM runs ORDER BY id DESC LIMIT 1")
        return (rows[0][0], json.loads(rows[0][1]).get("egress", {})) if rows else ("", {})

    try:
        world["forge"].add_hook(world["repo"], url=bot.url + "/webhook", secret=bot.secret)
        await dispatch(world, "probe")
        await wait_for(lambda: record()[1].get("blocked") == {"paste.example.org:443": 2}, timeout=60)
        assert record()[0] == "running"  # kept while the run goes on, not only at its end
        bot.kill()
        await bot.start()
        await wait_for(lambda: record()[0] == "completed", timeout=90)
        assert record()[1]["blocked"] == {"paste.example.org:443": 2, "later.example.org:443": 1}
    finally:
        await bot.stop()
        for container in our_containers(bot.data_dir):
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        executor = DockerExecutor()
        try:
            await dismantle(executor, Settings(data_dir=bot.data_dir))
        finally:
            await executor.close()


async def test_a_custom_agent_gets_a_run_token_for_its_key_and_the_gateway_sends_the_real_one(
        world, make_bot, real_agent_image, monkeypatch):
    """``vendor`` and ``base_url_env`` in its config: the CLI's key variable holds a run token, its
    base URL is the gateway, and the model behind ``base_urls.<agent>`` receives the real key."""
    monkeypatch.setenv("MINE_KEY", DECOY)
    model = FakeModel()
    await model.start()
    script = ('curl -s -o /dev/null -w "model %{http_code}\\n" -X POST "$MINE_URL/v1/messages" '
              '-H "x-api-key: $MINE_KEY" -H "content-type: application/json" '
              '-d \'{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}\'; echo "key $MINE_KEY"')
    try:
        bot = await make_bot(image=real_agent_image.tag, base_urls={"mine": model.url}, agents={"mine": {
            "argv": ["sh", "-c", script], "env": ["MINE_KEY"], "vendor": "anthropic", "base_url_env": "MINE_URL"}})
        await dispatch(world, "mine")
        run = await finished(bot)
        assert "key dbr-" in run.result.log_tail and DECOY not in run.result.log_tail, run.result.log_tail
        assert {r.headers.get("x-api-key") for r in model.calls("/v1/messages")} == {DECOY}
        assert "credentials_inside" not in run.result.egress
    finally:
        await model.close()


async def test_an_agent_whose_cli_takes_no_base_url_keeps_its_key_and_reaches_only_its_vendors_hosts(
        world, make_bot, real_agent_image, monkeypatch):
    """As coderabbit's CLI (it takes no base URL): its key is inside its container, its proxy reaches its
    vendor's hosts and no registry, and the status comment and doctor say so."""
    from bot.gateway.service import vendor_hosts
    from bot.runs.agents import resolve

    assert "api.coderabbit.ai" in vendor_hosts(resolve(Settings(), "coderabbit"))
    monkeypatch.setenv("MINE_KEY", DECOY)
    script = ("curl -s -m 5 -o /dev/null https://pypi.org/simple/ || true;"
              "curl -s -m 5 -o /dev/null https://api.anthropic.com/ || true; echo \"key $MINE_KEY\"")
    bot = await make_bot(image=real_agent_image.tag, agents={"mine": {
        "argv": ["sh", "-c", script], "env": ["MINE_KEY"], "vendor": "anthropic"}})
    issue = await dispatch(world, "mine")
    run = await finished(bot)
    assert "key " in run.result.log_tail and "key dbr-" not in run.result.log_tail, run.result.log_tail
    assert run.result.egress["credentials_inside"] is True
    assert run.result.egress["blocked"] == {"pypi.org:443": 1}  # api.anthropic.com was let through
    assert "a key its CLI cannot take from the gateway) were inside its container" in status(
        world["forge"], world["repo"], issue.number)
