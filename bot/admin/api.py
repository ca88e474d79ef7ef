"""The admin HTTP API under ``/api/``: JSON over the operations, behind a bearer token.

Without an ``admin_token`` (an empty one counts as none) the API is off, never open: every path under
``/api/`` answers 404 and says why. Tokens are compared in constant time and never logged. Every
answer is JSON, failures included; a refusal is ``{"error": "<one line>"}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from bot.admin import operations as ops
from bot.admin import tokens
from bot.admin.usage import usage_totals
from bot.runs.runner import Runner
from bot.services import Services
from bot.settings import Settings

log = logging.getLogger(__name__)

# The app builds the services and the runner at start, after the routes: the faces ask for them per request.
ServicesGetter = Callable[[], Services]
RunnerGetter = Callable[[], Runner]
GET_SERVICES = web.AppKey("get_services", ServicesGetter)
GET_RUNNER = web.AppKey("get_runner", RunnerGetter)
TOKEN = web.AppKey("token", str)


def admin_token(settings: Settings) -> str | None:
    """The admin token, or None when it is unset or empty: an empty one would let an empty one in."""
    secret = settings.admin_token.get_secret_value() if settings.admin_token else ""
    return secret or None


def authorized(request: web.Request, token: str) -> bool:
    """The request carries ``Authorization: Bearer <token>`` (``tokens.authorized``)."""
    return tokens.authorized(request, [token])


def unauthorized() -> web.Response:
    return web.json_response(
        {"error": "a valid admin token is required (Authorization: Bearer <token>)"},
        status=401, headers={"WWW-Authenticate": 'Bearer realm="dispatchbot"'},
    )


def mount_api(
    app: web.Application, settings: Settings, get_services: ServicesGetter, get_runner: RunnerGetter
) -> None:
    """Mount the API at ``/api/``, or, without a token, a 404 that says why."""
    token = admin_token(settings)
    if token is None:
        log.info("the admin API (/api/) and MCP (/mcp) are off: no admin_token is set")
        app.router.add_route("*", "/api/{tail:.*}", _off)
        return
    app.add_subapp("/api", create_api(get_services, get_runner, token))


async def _off(request: web.Request) -> web.Response:
    return web.json_response({"error": "the admin API is off: no admin_token is set"}, status=404)


def create_api(get_services: ServicesGetter, get_runner: RunnerGetter, token: str) -> web.Application:
    """The sub-application mounted at ``/api/``; the getters give the services and the runner once they run."""
    api = web.Application(middlewares=[_guard])
    api[GET_SERVICES] = get_services
    api[GET_RUNNER] = get_runner
    api[TOKEN] = token
    api.router.add_get("/runs", list_runs)
    api.router.add_get("/runs/{id}", show_run)
    api.router.add_get("/runs/{id}/log", run_log)
    api.router.add_post("/runs/{id}/cancel", cancel_run)
    api.router.add_post("/runs/{id}/retry", retry_run)
    api.router.add_post("/runs/{id}/answer", answer_run)
    api.router.add_get("/usage", usage)
    api.router.add_get("/pools", pools)
    api.router.add_get("/replicas", replicas)
    api.router.add_post("/freeze", freeze)
    api.router.add_post("/thaw", thaw)
    api.router.add_post("/poke", poke)
    api.router.add_post("/dispatch", dispatch)
    return api


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Token first, then the operation; refusals become JSON with their status."""
    if not authorized(request, request.app[TOKEN]):
        return unauthorized()
    try:
        return await handler(request)
    except ops.OperationError as e:
        return _error(e.status, str(e))
    except ValidationError as e:
        return _error(400, _first_error(e))
    except ops.FAILURES as e:
        refused = ops.refusal(e)
        return _error(refused.status, str(refused))
    except web.HTTPException as e:
        return _error(e.status, e.reason)
    except Exception as e:  # last resort: JSON, not aiohttp's plain-text 500
        log.exception("the admin API failed on %s %s", request.method, request.path)
        return _error(500, f"internal error ({type(e).__name__}); see the bot's log")


def _error(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]


def _json(value: BaseModel | list[BaseModel]) -> web.Response:
    if isinstance(value, list):
        return web.json_response([v.model_dump(mode="json") for v in value])
    return web.json_response(value.model_dump(mode="json"))


def _services(request: web.Request) -> Services:
    return request.app[GET_SERVICES]()


def _run_id(request: web.Request) -> int:
    raw = request.match_info["id"]
    if not raw.isdigit():
        raise ops.OperationError(400, f"run id {raw!r} is not a number")
    return int(raw)


async def _body(request: web.Request) -> dict[str, Any]:
    """The JSON object in the body; an empty body is an empty object."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise ops.OperationError(400, f"the body is not JSON: {e}") from None
    if not isinstance(body, dict):
        raise ops.OperationError(400, "the body must be a JSON object")
    return body


async def list_runs(request: web.Request) -> web.Response:
    q = request.query
    return _json(await ops.list_runs(_services(request), state=q.get("state"), repo=q.get("repo"), agent=q.get("agent")))


async def show_run(request: web.Request) -> web.Response:
    return _json(await ops.show_run(_services(request), _run_id(request)))


async def run_log(request: web.Request) -> web.Response:
    detail = await ops.show_run(_services(request), _run_id(request))
    return web.json_response({"id": detail.id, "state": detail.state, "log": detail.log_tail})


async def cancel_run(request: web.Request) -> web.Response:
    return _json(await ops.cancel_run(_services(request), _run_id(request)))


async def retry_run(request: web.Request) -> web.Response:
    return _json(await ops.retry_run(_services(request), _run_id(request)))


class _Answer(BaseModel):
    text: str


async def answer_run(request: web.Request) -> web.Response:
    answer = _Answer.model_validate(await _body(request))
    return _json(await ops.answer_run(_services(request), _run_id(request), answer.text))


async def usage(request: web.Request) -> web.Response:
    """What each repository's runs of each agent used over the last day and the last week."""
    return _json(await usage_totals(_services(request).store))


class _PoolChoice(BaseModel):
    pool: str | None = None


async def pools(request: web.Request) -> web.Response:
    return _json(await ops.pools(_services(request)))


async def replicas(request: web.Request) -> web.Response:
    return _json(await ops.replicas(_services(request)))


async def freeze(request: web.Request) -> web.Response:
    choice = _PoolChoice.model_validate(await _body(request))
    return _json(await ops.freeze(_services(request), True, choice.pool))


async def thaw(request: web.Request) -> web.Response:
    choice = _PoolChoice.model_validate(await _body(request))
    return _json(await ops.freeze(_services(request), False, choice.pool))


async def poke(request: web.Request) -> web.Response:
    return _json(await ops.poke(request.app[GET_RUNNER]()))


async def dispatch(request: web.Request) -> web.Response:
    inp = ops.DispatchInput.model_validate(await _body(request))
    return _json(await ops.dispatch(_services(request), inp))
