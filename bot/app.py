"""The aiohttp application: ``POST /webhook``, ``GET /healthz``, and the services' lifetimes.

The webhook endpoint acknowledges fast and does nothing slow: verify the signature over the raw
bytes, check the shape, record the delivery, answer. Gitea waits 5 s and never retries, so
everything fallible happens afterwards, driven by what was stored.

Both endpoints answer anyone, so neither lets a crowd of strangers cost much: a body must arrive in
time and only so many are waited for at once, and the health check runs once for all its callers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from handlers import router as default_router

from bot.admin import dashboard
from bot.runs import preflight
from bot.admin.api import mount_api
from bot.admin.replicas import replicas_view
from bot.engine import Engine
from bot.forge.client import Forge
from bot.intake.deliveries import Intake
from bot.admin.mcp_server import mount_mcp
from bot.admin.metrics import METRICS, Metrics
from bot.intake.routing import Router
from bot.services import Services
from bot.settings import Settings
from bot.store import open_store
from bot.intake.webhook import Event, WebhookError, verify

log = logging.getLogger(__name__)

SETTINGS = web.AppKey("settings", Settings)
ROUTER = web.AppKey("router", Router)
SERVICES = web.AppKey("services", Services)
INTAKE = web.AppKey("intake", Intake)
ENGINE = web.AppKey("engine", Engine)


class Arriving:
    """How many webhook bodies are being waited for now, of at most ``cap``.

    Reading a body holds it in memory until it is complete; a sender that stalls keeps that going
    for as long as ``body_timeout`` lets it. The cap bounds what all such senders hold together
    (``cap`` times ``max_body_bytes``) instead of letting a crowd of connections run the bot out of
    memory; past it a delivery gets 503 at once, which Gitea shows in the hook's delivery log.
    """

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.count = 0


HEALTH_REUSE = 1.0  # seconds a health check's answer is given again, to every probe


class Health:
    """``/healthz``'s answer, worked out by one check at a time and reused for ``HEALTH_REUSE`` s.

    The endpoint needs no token, and each check asks the Forge, the Docker engine and the store. A
    check per probe would let anyone turn the bot into an amplifier against the Forge and Docker,
    and, with SQLite's one connection, queue the webhook's own store writes (its acknowledgement,
    which Gitea waits 5 s for) behind thousands of reads. Probes arriving while a check is under
    way wait for it and share its answer; one a probe gave up on (a cancelled request) goes on for
    the others. A check that failed outright is not reused.
    """

    def __init__(self) -> None:
        self._check: asyncio.Task[tuple[int, dict]] | None = None
        self._answer: tuple[int, dict] | None = None
        self._until = 0.0

    async def answer(self, services: Services) -> tuple[int, dict]:
        if self._check is None:
            if self._answer is not None and time.monotonic() < self._until:
                return self._answer
            self._check = asyncio.create_task(_check_health(services))
            self._check.add_done_callback(self._done)
        return await asyncio.shield(self._check)

    def _done(self, check: asyncio.Task[tuple[int, dict]]) -> None:
        self._check = None
        if not check.cancelled() and check.exception() is None:
            self._answer, self._until = check.result(), time.monotonic() + HEALTH_REUSE


ARRIVING = web.AppKey("arriving", Arriving)
HEALTH = web.AppKey("health", Health)


def create_app(settings: Settings, router: Router = default_router) -> web.Application:
    missing = settings.missing_for_serve()
    if missing:
        raise ValueError("; ".join(missing))
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[ROUTER] = router
    app[ARRIVING] = Arriving(settings.max_arriving_bodies)
    app[HEALTH] = Health()
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", healthz)
    mount_api(app, settings, lambda: app[SERVICES], lambda: app[ENGINE].runner)
    mount_mcp(app, settings, lambda: app[SERVICES])
    dashboard.add_routes(app, settings)
    app.cleanup_ctx.append(_services)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = await open_store(settings.store_location)
    session = aiohttp.ClientSession()
    try:
        forge = Forge.from_settings(session, settings)
        services = Services.create(settings, store, forge)
        app[SERVICES] = services
        engine = Engine(services)
        app[ENGINE] = engine
        intake = None
        try:  # from here on whatever started is stopped again, also when a later step fails
            app[METRICS] = await Metrics.create(settings, store, forge, services.executor)
            app[dashboard.DASHBOARD] = dashboard.Dashboard(settings, store, services.executor, services.replica)
            await engine.start()
            intake = app[INTAKE] = Intake(services, app[ROUTER])
            await intake.start()
            engine.scheduler.add("redeliver", intake.retry_pending, settings.schedule.redeliver, cluster=True)
            yield
        finally:
            if intake is not None:
                await intake.stop()
            await engine.stop()
            await services.close()
    finally:
        await session.close()
        await store.close()


def _answer(status: int, message: str) -> web.Response:
    """A small JSON answer; Gitea shows it in the hook's delivery log."""
    return web.json_response({"status": "ok" if status < 300 else "error", "message": message}, status=status)


ACCEPTED_BODY = b'{"status": "ok", "message": "accepted"}'


async def webhook(request: web.Request) -> web.Response:
    outcome, response = await _receive(request)
    request.app[METRICS].deliveries.labels(outcome).inc()
    return response


async def _receive(request: web.Request) -> tuple[str, web.Response]:
    """Answer a delivery, and say what became of it: accepted, duplicate, ignored or refused."""
    app = request.app
    settings = app[SETTINGS]
    if (request.content_length or 0) > settings.max_body_bytes:
        return "refused", _answer(413, f"body over {settings.max_body_bytes} bytes")
    arriving = app[ARRIVING]
    waits = not request.content.is_eof()  # a body that has all arrived holds no slot
    if waits and arriving.count >= arriving.cap:
        log.warning("refused a delivery from %s: %d bodies arriving already", request.remote, arriving.count)
        return "refused", _answer(503, f"{arriving.count} deliveries arriving at once already; send it again")
    arriving.count += waits
    try:
        async with asyncio.timeout(settings.body_timeout):
            body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        return "refused", _answer(413, f"body over {settings.max_body_bytes} bytes")
    except TimeoutError:
        log.warning("refused a delivery from %s: body not received within %g s", request.remote, settings.body_timeout)
        return "refused", _answer(408, f"body not received within {settings.body_timeout:g} s")
    except ConnectionError:  # the sender hung up mid-body: nobody reads the answer
        log.warning("refused a delivery from %s: the connection closed mid-body", request.remote)
        return "refused", _answer(400, "connection closed mid-body")
    finally:
        arriving.count -= waits
    try:
        event_type, delivery_id = verify(request.headers, body, secret=settings.webhook_secret.get_secret_value())
    except WebhookError as e:
        log.warning("refused a delivery from %s: %s", request.remote, e)
        return "refused", _answer(e.status, str(e))
    if not app[ROUTER].handles(event_type):
        return "ignored", _answer(202, f"event type {event_type!r} ignored")
    try:
        event = Event.parse(event_type, delivery_id, body)
    except WebhookError as e:
        return "refused", _answer(e.status, str(e))
    if event.payload.sender.login == app[SERVICES].known_login:  # the echo of the bot's own API calls
        return "ignored", _answer(200, "the bot's own event, ignored")
    if not await app[SERVICES].store.record_delivery(delivery_id, event_type, body):
        return "duplicate", _answer(200, f"delivery {delivery_id} already received")
    app[INTAKE].submit(event)
    return "accepted", web.Response(status=202, body=ACCEPTED_BODY, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    status, body = await request.app[HEALTH].answer(request.app[SERVICES])
    return web.json_response(body, status=status)


async def _check_health(services: Services) -> tuple[int, dict]:
    """200 when the store, the Docker engine and the Forge answer, else 503; plus the default image.

    A missing default image is reported (``"image": "missing"``) but keeps the answer 200: a
    restart cannot build it, and an orchestrator restarting the bot over it would take the webhook
    endpoint down too, losing deliveries Gitea never retries. The runs say what is missing.
    So is the cluster (``"replica"``: this one's name; ``"replicas"``: each one, alive or lost), which
    says nothing of this replica's health: a lost other one is no reason to take this one out.
    """
    checks = {
        "store": services.store.ping(),
        "docker": services.executor.ping(),
        "forge": services.forge.answers(),  # one quick question: a probe is not retried
    }
    image = preflight.image_state(services.executor, services.settings.image)
    *results, image_state = await asyncio.gather(
        *(asyncio.wait_for(c, 5.0) for c in (*checks.values(), image)), return_exceptions=True
    )
    report = {name: (r is not False and not isinstance(r, BaseException)) for name, r in zip(checks, results, strict=True)}
    body = {name: "up" if ok else "down" for name, ok in report.items()}
    body["image"] = image_state if isinstance(image_state, str) else "unknown"
    if report["store"]:
        view = await replicas_view(services.settings, services.store, services.replica)
        body["replica"] = services.replica
        body["replicas"] = {r.id: "alive" if r.alive else "lost" for r in view.replicas}
    return (200 if all(report.values()) else 503), body
