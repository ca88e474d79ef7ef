"""The HTTP side: authentication, spec matching and checking, request log, faults, and git.

One aiohttp application serves ``/api/v1/...`` (through ``api.ROUTES``, keyed by spec template) and
smart-HTTP git under ``/{owner}/{repo}.git/...``. Everything a test may want to assert about traffic
lands in ``requests`` and ``violations``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
import traceback
from dataclasses import dataclass
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from . import api, git
from .faults import Faults, InjectedFault
from .service import ForgeError, Service
from .spec import BodyCheck, Spec
from .state import Access, User

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"
SCOPE_CATEGORIES = (("/user", "user"), ("/repos/{owner}/{repo}/issues", "issue"),
                    ("/repos/{owner}/{repo}/labels", "issue"), ("/repos/", "repository"))


@dataclass(frozen=True)
class RequestRecord:
    """One API call as the fake saw it."""

    method: str
    path: str  # as requested, without the query
    template: str | None  # the spec path it matched, e.g. "/repos/{owner}/{repo}/issues/{index}"
    query: dict[str, str]
    user: str | None  # login of the authenticated caller
    status: int  # what the fake answered (0: it dropped the connection)
    body: Any  # the decoded JSON body, if any
    fault: str | None  # the injected fault kind ("after_500", ..., "outage_503", "outage_reset"), if any
    began: float = 0.0  # time.monotonic() when it arrived
    ended: float = 0.0  # and when its answer was given (or the connection dropped)


@dataclass(frozen=True)
class Violation:
    """Something the client did that the spec (or Gitea) does not allow; see ``FakeForge.violations``."""

    kind: str  # route, method, body, query, auth, unimplemented
    method: str
    path: str
    detail: str


class _Unauthorized(Exception):
    pass


class ForgeServer:
    def __init__(self, svc: Service, spec: Spec, faults: Faults) -> None:
        self.svc = svc
        self.spec = spec
        self.faults = faults
        self.requests: list[RequestRecord] = []
        self.violations: list[Violation] = []
        self.internal_errors: list[str] = []  # tracebacks of the fake's own failures (should stay empty)
        self.closing = asyncio.Event()
        # Called once, at the next push, before git sees it (``FakeForge.outage_at_push``).
        self.at_push: Callable[[], Awaitable[None]] | None = None
        self.app = web.Application(client_max_size=1024**3)
        self.app.router.add_route("*", API_PREFIX + "/{tail:.*}", self.handle_api)
        self.app.router.add_route("*", "/{owner}/{repo}/{tail:info/refs|git-upload-pack|git-receive-pack}",
                                  self.handle_git)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        # auto_decompress off: git's gzip request bodies are inflated by git.http_backend itself, and
        # Gitea's API does not accept compressed bodies either.
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0, auto_decompress=False)
        await self._runner.setup()
        await self.listen(host, port)
        return self.port

    async def listen(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, host, self.port if port is None else port, reuse_address=True)
        await self._site.start()
        server = self._site._server  # the bound socket tells the real port when 0 was asked for
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """Refuse new connections and drop open ones, as a crashed server would."""
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            for connection in list(self._runner.server.connections):
                connection.force_close()

    async def close(self) -> None:
        self.closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- authentication ------------------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> User | None:
        """None for an anonymous request; raises _Unauthorized for credentials that match nobody."""
        token = credentials(request)
        if token is None:
            return None
        user = self.svc.state.user_by_token(token)
        if user is None:
            raise _Unauthorized
        return user

    # --- the API -------------------------------------------------------------------------------------

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path[len(API_PREFIX):] or "/"
        record: dict[str, Any] = {"method": request.method, "path": request.path, "template": None,
                                  "query": dict(request.query), "user": None, "body": None, "fault": None, "began": time.monotonic()}
        status = 0
        try:
            response = await self._api(request, path, record)
            status = 0 if record["fault"] == "outage_reset" else response.status
            return response
        finally:
            self.requests.append(RequestRecord(status=status, ended=time.monotonic(), **record))

    async def _api(self, request: web.Request, path: str, record: dict[str, Any]) -> web.StreamResponse:
        if self.faults.outage_mode in ("503", "reset"):
            record["fault"] = f"outage_{self.faults.outage_mode}"
            if self.faults.outage_mode == "reset":
                return self._reset(request)
            return web.Response(status=503, text="Service Unavailable", headers={"Retry-After": "1"})
        fault = self.faults.roll(request.method, request.path)
        record["fault"] = fault.kind if fault else None
        if fault is not None and not fault.applied:
            return await self._fail(request, fault)
        response = await self._dispatch(request, path, record)
        if fault is not None:
            return await self._fail(request, fault)
        return response

    async def _dispatch(self, request: web.Request, path: str, record: dict[str, Any]) -> web.StreamResponse:
        raw = await request.read()
        op, params, path_known = self.spec.match(request.method, path)
        if op is None:
            kind = "method" if path_known else "route"
            self.violate(kind, request, f"{request.method} {path} is not in the spec")
            return self.error(ForgeError(405 if path_known else 404, "not found"))
        record["template"] = op.template
        call = api.Call(self.svc, request, op, params, None, None)
        try:
            call.doer = self.authenticate(request)
        except _Unauthorized:
            return call.error_response(ForgeError(401, "invalid username, password or token"))
        record["user"] = call.doer.login if call.doer else None
        if "token" in request.query or "access_token" in request.query:
            self.violate("auth", request, "token in the query string (deprecated; use the Authorization header)")
        query = {name: request.query.getall(name) for name in request.query}
        for problem in self.spec.check_query(op, query):
            self.violate("query", request, problem)
        call.body_check = self._check_body(request, op, raw)
        record["body"] = call.body_check.value if call.body_check else None
        handler = api.ROUTES.get((op.method, op.template))
        if handler is None:
            self.violate("unimplemented", request, f"the fake does not implement {op.method} {op.template}")
            return call.error_response(ForgeError(501, "not implemented by the fake forge"))
        try:
            self._check_scope(call, op.method, op.template)
            return await handler(call)
        except ForgeError as error:
            return call.error_response(error)
        except Exception:  # a bug in the fake: answer like Gitea's 500, keep serving, and report it
            log.exception("fake forge: %s %s failed", request.method, request.path)
            self.internal_errors.append(f"{request.method} {request.path_qs}\n{traceback.format_exc()}")
            return call.error_response(ForgeError(500, ""))

    def _check_body(self, request: web.Request, op: Any, raw: bytes) -> BodyCheck | None:
        if op.body_schema is None:
            if raw.strip():
                self.violate("body", request, f"a body was sent to {op.method} {op.template}, which takes none")
            return None
        check = self.spec.check_body(op, request.method, request.headers.get("Content-Type", ""), raw)
        for problem in check.problems:
            self.violate("body", request, f"{op.body_def}: {problem}")
        return check

    def _check_scope(self, call: api.Call, method: str, template: str) -> None:
        """Token scopes: GET needs read, everything else write, of the route's category."""
        doer = call.doer
        category = next((cat for prefix, cat in SCOPE_CATEGORIES if template.startswith(prefix)), None)
        if doer is None or doer.scopes is None or category is None:
            return
        needed = f"{'read' if method == 'GET' else 'write'}:{category}"
        granted = doer.scopes
        if "all" in granted or needed in granted or (needed.startswith("read:") and f"write:{category}" in granted):
            return
        raise ForgeError(403, f"token does not have at least one of required scope(s), required=[{needed}], "
                                f"token scope={','.join(sorted(granted))}")

    def error(self, error: ForgeError) -> web.Response:
        return api.error_response(self.svc.site.swagger_url, error)

    def violate(self, kind: str, request: web.Request, detail: str) -> None:
        self.violations.append(Violation(kind, request.method, request.path_qs, detail))

    # --- faults --------------------------------------------------------------------------------------

    async def _fail(self, request: web.Request, fault: InjectedFault) -> web.StreamResponse:
        if fault.kind.endswith("_hang"):
            try:
                await asyncio.wait_for(self.closing.wait(), self.faults.hang_seconds)
            except asyncio.TimeoutError:
                pass
            return web.Response(status=504, text="<html><body><h1>504 Gateway Time-out</h1></body></html>",
                                content_type="text/html")
        if fault.kind.endswith("_502"):
            return web.Response(status=502, text="<html><body><h1>502 Bad Gateway</h1></body></html>",
                                content_type="text/html")
        return self.error(ForgeError(500, ""))

    @staticmethod
    def _reset(request: web.Request) -> web.StreamResponse:
        """Drop the connection without an answer (the client sees a reset / disconnect)."""
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=503)  # never arrives: aiohttp drops it on the closed transport

    # --- git -----------------------------------------------------------------------------------------

    async def handle_git(self, request: web.Request) -> web.StreamResponse:
        """Smart HTTP: anonymous reads of visible repos, authenticated pushes (write checked by the hook)."""
        state = self.svc.state
        repo_name = request.match_info["repo"]
        repo_name = repo_name[:-4] if repo_name.endswith(".git") else repo_name
        repo = state.find_repo(request.match_info["owner"], repo_name)
        pushing = request.match_info["tail"] == "git-receive-pack" or request.query.get("service") == "git-receive-pack"
        try:
            user = self.authenticate(request)
        except _Unauthorized:
            return _ask_auth()
        if repo is None or not state.can_see(user, repo):
            return _ask_auth() if user is None else web.Response(status=404, text="Repository not found")
        if pushing and user is None:
            return _ask_auth()
        if pushing and self.at_push is not None:
            at_push, self.at_push = self.at_push, None
            await at_push()
            return self._reset(request)  # this push never reaches git
        path_info = f"/{repo.path.parent.name}/{repo.path.name}/{request.match_info['tail']}"
        project_root = repo.path.parent.parent
        if not (pushing and request.method == "POST"):
            return await git.http_backend(request, project_root, path_info, user.login if user else None)
        assert user is not None
        # A push is answered only after the fake caught up with it (PR heads, sync webhooks queued), so a
        # test can assert right after ``git push`` returns.
        async with self.svc.git_lock(repo):
            before = await asyncio.to_thread(git.branches, repo.path)
            response = await git.http_backend(request, project_root, path_info, user.login, buffered=True,
                                              can_write=state.access(user, repo) >= Access.WRITE,
                                              protected=tuple(rule for rule, allowed in repo.protections.items()
                                                              if user.login not in allowed))
            repo.branches = await asyncio.to_thread(git.branches, repo.path)
        changed = {name: (before.get(name, git.ZERO_SHA), repo.branches.get(name, git.ZERO_SHA))
                   for name in set(before) | set(repo.branches) if before.get(name) != repo.branches.get(name)}
        if changed:
            await self.svc.on_push(repo, user, changed)
        return response


def _ask_auth() -> web.Response:
    return web.Response(status=401, text="Unauthorized\n", headers={"WWW-Authenticate": 'Basic realm="Gitea"'})


def credentials(request: web.Request) -> str | None:
    """The token a request carries, by Gitea 1.26's rules (a token or Bearer header, Basic, the query);
    "" means unusable credentials."""
    header = request.headers.get("Authorization", "")
    parts = header.split()
    if len(parts) == 2 and parts[0].lower() in ("token", "bearer"):
        return parts[1]
    if len(parts) == 2 and parts[0].lower() == "basic":
        try:
            user, _, password = base64.b64decode(parts[1], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return user if password in ("", "x-oauth-basic") else password
    return request.query.get("token") or request.query.get("access_token") or None
