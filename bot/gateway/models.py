"""The gateway's model side: ``/<agent>/<run token>/<the API's own path>``, forwarded upstream with
the real key in place of the token, the answer streamed back chunk by chunk as it arrives.

Only the calls of the vendor's API that the CLIs make are forwarded (``vendors.ROUTES``): the rest
of an API the real key opens (batches, files, stored completions...) is refused before the key is
added, and counted in the run's record as the proxy's refusals are. So is, with egress closed, a
call whose body has the vendor reach out for the agent (``reach``: a URL to fetch, an MCP server).

What the CLI is told when the gateway refuses (a bad token, a refused call, an upstream it cannot
reach) is one JSON body that reads as an error in each vendor's shape, with ``x-should-retry:
false`` (claude would otherwise retry a 401 for minutes).

A call's body is read whole (up to ``max_request_bytes``, and the observer may copy it), so one
run has at most ``gateway.run_model_calls`` calls in flight; the next ones wait their turn, their
bodies unread (aiohttp stops reading a socket past a small buffer), rather than being refused,
which the CLIs handle badly (claude goes by ``x-should-retry``, codex and gemini retry a 429 or a
5xx whatever they are told): 200 parallel posts of one run hold 8 bodies, not 200 (6-13 GB). A
waiting CLI that hangs up is noticed only at its turn, its socket being unread till then. Each
waiting call holds a socket, so a run's calls in flight and waiting count in its
``run_connections`` (``sockets``), and one more gets 429.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from bot.gateway.grants import Grants, Holder
from bot.gateway.observer import Api, Call, Observer
from bot.gateway.reach import Refused, outbound
from bot.gateway.sockets import Sockets
from bot.gateway.vendors import AUTH_HEADERS, VENDORS, key_vendors, route_of, vendor_of_header
from bot.runs.agents import UnknownAgent, resolve
from bot.settings import Settings

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself. An answer is forwarded
# decoded (its usage is read from it, and the budgets stand on that): asked for as it is, and
# decoded when an upstream compresses it anyway, so no coding passes either way.
_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
        "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding", "content-encoding"}


def refusal(status: int, message: str) -> web.Response:
    kind = {401: "authentication_error", 400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    code = {401: "UNAUTHENTICATED", 404: "NOT_FOUND"}.get(status, "UNAVAILABLE")
    body = {"type": "error", "error": {"type": kind, "code": status, "status": code,
                                        "message": f"dispatchbot gateway: {message}"}}
    return web.json_response(body, status=status, headers={"x-should-retry": "false"})


@dataclass(frozen=True)
class Upstream:
    vendor: str  # whose API it is (``VENDORS``), for the calls it may be asked (``ROUTES``)
    url: str  # root URL, no trailing slash
    header: str  # where the key goes ("" for none)
    value: str  # the header's value ("" to send none)


def upstream_for(settings: Settings, agent_name: str, headers: Mapping[str, str],
                 environ: Mapping[str, str]) -> Upstream | None:
    """Where ``agent_name``'s calls go and with which key; None for an agent with no model API here."""
    try:
        agent = resolve(settings, agent_name)
    except (UnknownAgent, ValueError):
        return None
    if agent.name == "local":
        return Upstream("ollama", agent.endpoint, "", "")
    keys = key_vendors(agent)
    chosen = vendor_of_header(headers, tuple(dict.fromkeys(keys.values())))
    if chosen is None:
        return None
    vendor = VENDORS[chosen]
    key = next((environ[k] for k, v in keys.items() if v == chosen and environ.get(k)), "")
    url = agent.endpoint or vendor.upstream
    return Upstream(chosen, url.rstrip("/"), vendor.header, vendor.prefix + key if key else "")


class RunSlots:
    """At most ``most`` places per run at once; the other callers wait their turn (first come, first
    served). A run is kept only while one of its calls holds or waits for a place, and a place is
    given back on every way out (an answer, an error, a cancellation)."""

    def __init__(self, most: int) -> None:
        self.most = most
        self._runs: dict[int, _Places] = {}

    def __len__(self) -> int:
        return len(self._runs)

    @contextlib.asynccontextmanager
    async def place(self, run_id: int) -> AsyncIterator[None]:
        run = self._runs.setdefault(run_id, _Places(asyncio.Semaphore(self.most)))
        run.users += 1
        try:
            async with run.places:
                yield
        finally:
            run.users -= 1
            if not run.users:
                del self._runs[run_id]


@dataclass
class _Places:
    """One run's places, and how many of its calls hold or wait for one."""

    places: asyncio.Semaphore
    users: int = 0


class ModelProxy:
    """The aiohttp handler; one client session for every upstream call."""

    def __init__(self, settings: Settings, grants: Grants, observer: Observer,
                 failed: Callable[[int, str], None], environ: Mapping[str, str] = os.environ,
                 refused: Callable[[int, str], None] = lambda run_id, call: None,
                 sockets: Sockets | None = None) -> None:
        self.settings = settings
        self.grants = grants
        self.observer = observer
        self.failed = failed  # (run id, reason): an upstream the gateway could not reach
        self.refused = refused  # (run id, the call): one not forwarded, for the run's record
        self.environ = environ
        limits = settings.gateway
        self.calls = RunSlots(limits.run_model_calls)  # each run's calls in flight (see the module)
        self.sockets = sockets or Sockets(limits)  # shared with the proxy in the gateway
        self._runner: web.AppRunner | None = None
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout),
            connector=aiohttp.TCPConnector(limit=0),
        )

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """The app on ``host:port``, each connection counted in ``sockets`` and given ``head_timeout``
        for each request head (aiohttp's keep-alive timeout, which also runs from a connection's
        start; its default is an hour). The caller closes the server, then ``unserve``."""
        self._runner = web.AppRunner(self.app(), access_log=None, keepalive_timeout=self.settings.gateway.head_timeout)
        await self._runner.setup()
        connection = self._runner.server
        assert connection is not None
        return await asyncio.get_running_loop().create_server(lambda: self.sockets.protocol(connection()), host, port)

    async def unserve(self) -> None:
        """The served app's connections closed."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close(self) -> None:
        await self.unserve()
        await self.session.close()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.gateway.max_request_bytes, middlewares=[self._headed])
        app.router.add_route("*", "/{agent}/{token}/{tail:.*}", self.handle)
        return app

    @web.middleware
    async def _headed(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        """Past its head while its answer is made; waiting for its next one after (an answer returned
        here is written out before the loop runs another connection's start, which could drop it)."""
        self.sockets.headed(request.transport)
        try:
            return await handler(request)
        finally:
            self.sockets.idle(request.transport)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        agent, token = request.match_info["agent"], request.match_info["token"]
        holder = await self.grants.check(token)
        if holder is None or holder.role != "agent" or holder.grant.agent != agent:
            return refusal(401, "this token is not valid (unknown, for another agent, or its run has ended)")
        upstream = upstream_for(self.settings, agent, request.headers, self.environ)
        if upstream is None:
            return refusal(404, f"agent {agent!r} has no model API behind the gateway")
        path = "/" + request.match_info["tail"]
        route = route_of(upstream.vendor, request.method, path)
        if route is None:
            call = f"{request.method} {_shown(path)} ({upstream.vendor} API)"
            log.info("run %s: refused a model API call, %s", holder.grant.run_id, call)
            self.refused(holder.grant.run_id, call)
            return refusal(404, f"{call} is not a call the gateway forwards (only the CLIs' model calls are)")
        with self.sockets.of_run(holder.grant.run_id) as placed:
            if not placed:
                return refusal(429, f"this run has {self.sockets.run_most} calls and connections open through "
                               "the gateway, its most at once")
            return await self._call(request, holder, upstream, path, route.api)

    async def _call(self, request: web.Request, holder: Holder, upstream: Upstream, path: str, api: Api
                    ) -> web.StreamResponse:
        async with self.calls.place(holder.grant.run_id):  # waited for before the body is read
            if request.transport is None or request.transport.is_closing():
                return web.Response(status=499)  # the CLI went away while it waited: nobody to answer
            try:
                body = await request.read()
            except web.HTTPRequestEntityTooLarge:
                return refusal(413, f"request over {self.settings.gateway.max_request_bytes} bytes")
            if self.settings.egress == "gateway":
                try:
                    body = outbound(upstream.vendor, body)
                except Refused as e:
                    call = f"{request.method} {_shown(path)} asking for {e} ({upstream.vendor} API)"
                    log.info("run %s: refused a model API call, %s", holder.grant.run_id, call)
                    self.refused(holder.grant.run_id, call)
                    return refusal(400, f"{call} is not forwarded: egress is closed, and the model API would "
                                   "reach out for the agent")
            reason = await self.observer.admit(holder.grant, api, body)
            if reason:  # 400: codex and gemini retry a 429 or a 5xx whatever the headers say
                return refusal(400, reason)
            return await self._forward(request, holder, upstream, path, api, self.observer.request(api, body))

    async def _forward(self, request: web.Request, holder: Holder, upstream: Upstream, path: str, api: Api,
                       body: bytes) -> web.StreamResponse:
        headers = CIMultiDict((k, v) for k, v in request.headers.items()
                              if k.lower() not in _HOP and k.lower() not in AUTH_HEADERS)
        if upstream.value:
            headers[upstream.header] = upstream.value
        headers["Accept-Encoding"] = "identity"
        query = [(k, v) for k, v in request.query.items() if k != "key"]  # gemini's key may come as ?key=
        meter = self.observer.meter(holder.grant, api, body)
        url = upstream.url + path
        try:
            answer = await self.session.request(request.method, url, params=query, headers=headers, data=body,
                                                allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            reason = f"cannot reach the model API at {upstream.url}: {e.__class__.__name__} {e}".strip()
            self.failed(holder.grant.run_id, reason)
            meter.finish(Call(holder.grant, api, request.method, path, 502), complete=False)
            return refusal(502, reason)
        complete = False
        response = web.StreamResponse(status=answer.status, reason=answer.reason)
        try:
            for k, v in answer.headers.items():
                if k.lower() not in _HOP:
                    response.headers.add(k, v)
            await response.prepare(request)
            sent, limit = 0, self.settings.gateway.max_answer_bytes
            async for chunk in answer.content.iter_any():
                sent += len(chunk)
                if sent > limit:
                    log.warning("run %s: answer over %d bytes cut off", holder.grant.run_id, limit)
                    if request.transport is not None:  # the CLI sees a broken answer, not a short one
                        request.transport.close()
                    break
                meter.feed(chunk)
                await response.write(chunk)
            else:
                await response.write_eof()
                complete = True
            return response
        except (ConnectionError, aiohttp.ClientError) as e:  # the CLI went away, or the upstream broke off
            log.warning("run %s: the answer from %s ended early, the CLI or the upstream gone: %s %s",
                        holder.grant.run_id, upstream.url, e.__class__.__name__, e)
            if request.transport is not None:  # else aiohttp would end it cleanly: a short answer, not a broken one
                request.transport.close()
            return response
        finally:
            answer.release()
            meter.finish(Call(holder.grant, api, request.method, path, answer.status), complete=complete)


def _shown(path: str) -> str:
    """A refused path as the run's record and status comment show it: short, and plain text (the
    agent chose it)."""
    return re.sub(r"[^A-Za-z0-9/._:-]", "?", path[:80]) + ("…" if len(path) > 80 else "")
