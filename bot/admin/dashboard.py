"""The operator's read-only web face: the dashboard (``GET /``, ``/runs/<id>``) and ``GET /metrics``.

The dashboard opens with the admin token or the read-only token, sent as a bearer header, or once
as ``?token=`` from a browser: that answer sets an HttpOnly, SameSite=Strict cookie holding a value
derived from the token (never the token itself) and redirects to the same page without it, so the
token leaves the address bar and the history. With neither token configured the dashboard is off.
``/metrics`` is open unless ``metrics_public`` is false: Prometheus scrapers rarely carry a token,
and the metrics hold counts, not task texts or logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

from aiohttp import web

from bot.admin import dashboard_html as pages
from bot.executor.docker import DockerExecutor, ExecutorError
from bot.report.links import links as forge_links
from bot.report.shown import Shown
from bot.logs import mask
from bot.admin.metrics import CONTENT_TYPE, METRICS
from bot.admin.usage import usage_totals
from bot.store.pools import pools_view
from bot.admin.replicas import replicas_view
from bot.admin.tokens import authorized, matches
from bot.settings import Settings
from bot.store import ACTIVE, LIVE, Run, Store
from bot.store.policy import Hold
from bot.usage import budgets

log = logging.getLogger(__name__)

COOKIE = "dispatchbot_session"
COOKIE_AGE = 7 * 86400
QUEUE_SHOWN = 50  # queued runs listed on the main page; the rest are counted
RECENT_SHOWN = 25
LOG_TAIL_LINES = 200  # lines a viewer gets of what was written before it came
LINE_CHARS = 4000  # a longer line is cut: the page stays bounded
LOOK = 5.0  # seconds a live log waits for a change of the runs before it looks at its run anyway
MAX_STREAMS = 32  # live logs served at once: each holds a request to the Docker engine


class Dashboard:
    """What the pages read: settings, the store and the executor (live logs)."""

    def __init__(self, settings: Settings, store: Store, executor: DockerExecutor, replica: str) -> None:
        self.settings = settings
        self.replica = replica  # the replica serving the page
        self.store = store
        self.executor = executor
        self.streams: set[asyncio.Task[object]] = set()  # live logs being served, ended at shutdown

    def close_streams(self) -> None:
        for task in self.streams:
            task.cancel()


DASHBOARD = web.AppKey("dashboard", Dashboard)


def tokens(settings: Settings) -> list[str]:
    return [t.get_secret_value() for t in (settings.admin_token, settings.read_token) if t]


def add_routes(app: web.Application, settings: Settings) -> None:
    """Register the pages when a token opens them, and ``/metrics`` when it can be read at all."""
    app.on_shutdown.append(_close_streams)
    if tokens(settings):
        app.router.add_get("/", _guarded(index))
        app.router.add_get("/runs/{run_id:\\d+}", _guarded(run_page))
        app.router.add_get("/runs/{run_id:\\d+}/log", _guarded(run_log))
        app.router.add_get("/runs/{run_id:\\d+}/usage", _guarded(run_usage))
    else:
        log.info("the dashboard is off: set read_token or admin_token to open it")
    if settings.metrics_public:
        app.router.add_get("/metrics", metrics)
    elif tokens(settings):
        app.router.add_get("/metrics", _guarded(metrics))
    else:
        log.info("/metrics is off: metrics_public is false and no read_token or admin_token is set")


async def _close_streams(app: web.Application) -> None:
    """A viewer's live log would otherwise hold the shutdown until the run ends."""
    if DASHBOARD in app:
        app[DASHBOARD].close_streams()


# Access ---------------------------------------------------------------------------------------


def _session_value(token: str) -> str:
    """What the cookie holds: proof of the token, useless as a bearer token elsewhere."""
    return hmac.new(token.encode(), b"dispatchbot dashboard session", hashlib.sha256).hexdigest()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guarded(handler: Handler) -> Handler:
    async def guarded(request: web.Request) -> web.StreamResponse:
        configured = tokens(request.app[DASHBOARD].settings)
        if "token" in request.query:
            if not matches(request.query["token"], configured):
                return _denied("Wrong token.")
            # Drop the token from the address; the cookie carries the session from now on.
            address = request.rel_url.without_query_params("token")
            response = web.Response(status=303, headers={"Location": str(address)})
            response.set_cookie(
                COOKIE, _session_value(request.query["token"]), max_age=COOKIE_AGE, path="/",
                httponly=True, samesite="Strict", secure=request.secure,
            )
            return response
        authorization = request.headers.get("Authorization", "")
        if authorized(request, configured):
            return await handler(request)
        cookie = request.cookies.get(COOKIE, "")
        if cookie and matches(cookie, [_session_value(t) for t in configured]):
            return await handler(request)
        if authorization or cookie:
            return _denied("Wrong token.")
        return _denied("A token is needed: open this page once as ?token=<read or admin token>.")

    return guarded


def _denied(message: str) -> web.Response:
    nonce = secrets.token_urlsafe(12)
    response = web.Response(status=401, text=pages.denied(message, nonce), content_type="text/html")
    response.headers["WWW-Authenticate"] = 'Bearer realm="dispatchbot"'
    return _hardened(response, nonce)


def _hardened(response: web.StreamResponse, nonce: str) -> web.StreamResponse:
    """Only this page's own style and script run; nothing loads from elsewhere, nothing frames it."""
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; script-src 'nonce-{nonce}'; connect-src 'self';"
        " base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _html(text_for: Callable[[str], str]) -> web.StreamResponse:
    nonce = secrets.token_urlsafe(12)
    return _hardened(web.Response(text=text_for(nonce), content_type="text/html"), nonce)


# Pages ----------------------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    d = request.app[DASHBOARD]
    s = d.settings
    now = time.time()
    shown = await d.store.queued(QUEUE_SHOWN)
    active = await d.store.runs(states=ACTIVE)
    recent = await d.store.recent_ended(RECENT_SHOWN)
    view = await pools_view(s, d.store)
    cluster = await replicas_view(s, d.store, d.replica)
    links = await _links(d, [*shown, *active, *recent])
    usage = await d.store.usages([r.id for r in (*active, *recent)])
    totals = await usage_totals(d.store, now)
    holds = await _holds(d, shown, now)
    return _html(lambda nonce: pages.main_page(
        now=now,
        frozen=view.frozen,
        max_running=view.max_running,
        pools=view.pools,
        replicas=cluster.replicas,
        queue=[(i, r, links[r.id]) for i, r in enumerate(shown, start=1)],
        holds=holds,
        resets_at=budgets.next_day(now),
        queued_total=sum(p.queued for p in view.pools),
        active=[(r, links[r.id]) for r in active],
        recent=[(r, links[r.id]) for r in recent],
        usage=usage,
        totals=totals,
        nonce=nonce,
    ))


async def run_page(request: web.Request) -> web.StreamResponse:
    d = request.app[DASHBOARD]
    run = await _run(request)
    links = await _links(d, [run])
    history = await d.store.history(run.id)
    log_tail = run.result.log_tail or run.result.qa_log
    position = await d.store.queue_position(run.id) if run.state == "queued" else None
    usage = await d.store.usage(run.id)
    return _html(lambda nonce: pages.run_page(
        run=run, links=links[run.id], history=history, log_tail=log_tail, live=run.state in LIVE,
        position=position, usage=usage, now=time.time(), nonce=nonce,
    ))


async def _run(request: web.Request) -> Run:
    run = await request.app[DASHBOARD].store.get(int(request.match_info["run_id"]))
    if run is None:
        raise web.HTTPNotFound(text="no such run")
    return run


async def _holds(d: Dashboard, runs: list[Run], now: float) -> dict[int, Hold]:
    """The spent daily budget that keeps each queued run waiting, if one does (asked once per
    repository and pool)."""
    if budgets.daily(d.settings) is None:
        return {}
    found: dict[tuple[str, str, str], Hold | None] = {}
    for run in runs:
        key = (run.owner, run.repo, run.pool)
        if key not in found:
            found[key] = await budgets.hold(d.settings, d.store, run, now)
    return {run.id: hold for run in runs if (hold := found[(run.owner, run.repo, run.pool)]) is not None}


async def _links(d: Dashboard, runs: list[Run]) -> dict[int, dict[str, str]]:
    """Each run's place on the Forge, from what the reporter stored when it showed it there."""
    reported = await d.store.reported_facets({r.id for r in runs}, ("comment_url", "pull", "review"))
    return {run.id: forge_links(run, Shown.of(reported.get(run.id, {})), d.settings.forge_url or "") for run in runs}


# The live log and usage ---------------------------------------------------------------------


async def _stream(request: web.Request, relay: Callable[[Dashboard, int, web.StreamResponse], Awaitable[None]]
                  ) -> web.StreamResponse:
    """Server-Sent Events from ``relay`` while the run lives; at most ``MAX_STREAMS`` at once."""
    d = request.app[DASHBOARD]
    run = await _run(request)
    if len(d.streams) >= MAX_STREAMS:
        raise web.HTTPServiceUnavailable(text=f"{MAX_STREAMS} live views are open already; try again later")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    task = asyncio.current_task()
    d.streams.add(task)
    try:
        await relay(d, run.id, response)
    finally:
        d.streams.discard(task)
    return response


async def run_usage(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the run's usage and progress, as the status comment words it, each time
    it changes (the gateway metered a call, the run moved, or the clock passed a second), then ``end``."""
    return await _stream(request, _relay_usage)


async def _relay_usage(d: Dashboard, run_id: int, response: web.StreamResponse) -> None:
    changes = d.store.subscribe("usage", "runs")  # before the first look, so no change falls in between
    sent = ""
    while (run := await d.store.get(run_id)) is not None and run.state in LIVE:
        usage = await d.store.usage(run_id)
        now = time.time()
        view = json.dumps({"line": pages.usage_headline(run, usage, now), "models": pages.usage_rows(usage),
                           "actions": pages.usage_actions(usage)})
        if view != sent:
            await response.write(_event(view, "usage"))
            sent = view
        await changes.wait(1.0)  # the elapsed time moves on by the second
    await response.write(_event(run.state if run else "gone", "end"))


async def run_log(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: the agent container's output while the run lives, then ``end``.

    Each viewer holds one streaming request to the Docker engine while the agent runs, starting
    from its last lines; between containers (queued, preparing, QA) it waits for the store to
    say that runs changed. Lines are masked like every other log the bot keeps.
    """
    return await _stream(request, _relay)


async def _relay(d: Dashboard, run_id: int, response: web.StreamResponse) -> None:
    changes = d.store.subscribe("runs")  # before the first look, so no change falls in between
    followed: set[str] = set()
    hidden = d.settings.secrets()
    while (run := await d.store.get(run_id)) is not None and run.state in LIVE:
        if run.state == "running" and run.container_id and run.container_id not in followed:
            followed.add(run.container_id)
            stream = d.executor.follow(run.container_id, tail=LOG_TAIL_LINES)
            try:
                async with aclosing(stream):  # a viewer gone must not keep the engine's stream open
                    async for line in _lines(stream):  # masked whole, then cut: no secret shows in part
                        await response.write(_event(mask(line, hidden)[:LINE_CHARS]))
            except ExecutorError as e:
                log.warning("run %s: the live log stopped: %s", run.id, e)
        else:
            await changes.wait(LOOK)
    await response.write(_event(run.state if run else "gone", "end"))


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[str]:
    """Whole lines of a byte stream, decoded; a line without end is given as it stands past
    ``4 * LINE_CHARS`` bytes."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode(errors="replace")
        if len(pending) > 4 * LINE_CHARS:  # a line without end: show what came
            yield pending.decode(errors="replace")
            pending = b""
    if pending:
        yield pending.decode(errors="replace")


def _event(data: str, kind: str = "") -> bytes:
    """One SSE event; a carriage return would end the field early, so it goes."""
    head = f"event: {kind}\n" if kind else ""
    return f"{head}data: {data.replace(chr(13), '')}\n\n".encode()


# Metrics --------------------------------------------------------------------------------------


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[METRICS].render()  # the app's, which the webhook counts in too
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
