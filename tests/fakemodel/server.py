"""The fake model server: one aiohttp app on 127.0.0.1 that every CLI can be pointed at."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .script import Script, Tokens, hello, sample
from .tools import NoUsableTool, call_for
from .wire import Chat, Gemini, Messages, Responses

# Ollama's probes (codex --oss asks them before its first turn).
OLLAMA_VERSION = "0.13.5"


@dataclass(frozen=True)
class Recorded:
    """One request as it arrived, for assertions (headers keep their original case)."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None


@dataclass(frozen=True)
class Sent:
    """The usage one answer reported, as the vendor counts it."""

    path: str
    model: str
    tokens: Tokens


class FakeModel:
    """Scripted model behind the APIs the CLIs call; every request is kept in ``requests``.

    ``script`` is played in every conversation; ``unauthorized`` makes every model call answer 401
    with the vendor's error body and ``x-should-retry: false`` (the probes still answer; without that
    header claude retries a 401 for minutes). ``workdir`` is where the CLI runs, for
    the absolute paths file tools demand. ``models`` are the names ollama's probes list. An answer in
    one JSON body is gzipped for a client that accepts it, as the vendors' are.
    """

    def __init__(self, script: Script | None = None, *, workdir: str = "/workspace/repo",
                 models: tuple[str, ...] = ("devstral-24b",)) -> None:
        self.script = script or hello()
        self.workdir = workdir
        self.models = models
        self.unauthorized = False
        self.requests: list[Recorded] = []
        self.sent: list[Sent] = []  # the usage each model answer reported, in order
        self.errors: list[str] = []
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record, _compress], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/tags", self._tags)
        app.router.add_route("HEAD", "/api/hello", self._hello)
        app.router.add_post("/v1/responses", self._wire(Responses))
        app.router.add_post("/v1/messages", self._wire(Messages))
        app.router.add_post("/v1/chat/completions", self._wire(Chat))
        app.router.add_post("/v1beta/models/{model}:streamGenerateContent", self._wire(Gemini))
        app.router.add_post("/v1beta/models/{model}:generateContent", self._gemini_once)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    def calls(self, path_prefix: str) -> list[Recorded]:
        """The recorded requests whose path starts with ``path_prefix``."""
        return [r for r in self.requests if r.path.startswith(path_prefix)]

    # Plumbing ---------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.requests.append(Recorded(request.method, request.path, request.query_string,
                                      dict(request.headers), body))
        try:
            return await handler(request)
        except web.HTTPException as e:
            if e.status == 404:
                self.errors.append(f"unexpected request {request.method} {request.path}")
            raise

    def _wire(self, wire):
        async def handle(request: web.Request) -> web.StreamResponse:
            if self.unauthorized:
                return web.json_response(wire.unauthorized, status=401, headers={"x-should-retry": "false"})
            body = await request.json()
            tool, text, tokens = self._next(wire, body)
            model = request.match_info.get("model") or body.get("model") or "fake"
            self._sent(request, wire, body, tokens, model)
            if wire is Messages and not body.get("stream"):
                return web.json_response(Messages.message(body, tool, text, tokens))
            if wire is Gemini:
                return await _stream(request, Gemini.turn(body, tool, text, tokens, model))
            return await _stream(request, wire.turn(body, tool, text, tokens))

        return handle

    def _next(self, wire, body: dict[str, Any]) -> tuple[tuple[str, dict[str, Any]] | None, str, Tokens]:
        """The tool call or final text this turn, and its usage. A side request asking for
        structured output gets a minimal matching object; one offering no tools gets the final text."""
        schema = wire.schema(body)
        if schema is not None:
            return None, json.dumps(sample(schema)), self.script.side
        offered = wire.offered(body)
        if not offered:
            return None, self.script.final, self.script.side
        answered = wire.answered(body)
        step, tokens = self.script.next(answered), self.script.usage(answered)
        if step is None:
            return None, self.script.final, tokens
        try:
            return call_for(step, offered, self.workdir), "", tokens
        except NoUsableTool as e:
            self.errors.append(str(e))
            return None, self.script.final, tokens

    def _sent(self, request: web.Request, wire, body: dict[str, Any], tokens: Tokens, model: str) -> None:
        reported = wire.sent(body, tokens)
        if reported is not None:
            self.sent.append(Sent(request.path, model, reported))

    async def _gemini_once(self, request: web.Request) -> web.Response:
        if self.unauthorized:
            return web.json_response(Gemini.unauthorized, status=401)
        body = await request.json()
        tool, text, tokens = self._next(Gemini, body)
        self._sent(request, Gemini, body, tokens, request.match_info["model"])
        return web.json_response(Gemini.response(tool, text, tokens, request.match_info["model"]))

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.models]})

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": OLLAMA_VERSION})

    async def _tags(self, request: web.Request) -> web.Response:
        return web.json_response({"models": [{"name": m, "model": m, "size": 1, "digest": "0" * 64}
                                             for m in self.models]})

    async def _hello(self, request: web.Request) -> web.Response:
        return web.Response()


@web.middleware
async def _compress(request: web.Request, handler) -> web.StreamResponse:
    """As the vendors' fronts do (Cloudflare's for Anthropic and OpenAI, Google's own): an answer in
    one JSON body is gzipped for a client that accepts it, as the CLIs' HTTP libraries say they do."""
    response = await handler(request)
    if (isinstance(response, web.Response) and response.content_type == "application/json"
            and "gzip" in request.headers.get("Accept-Encoding", "")):
        response.enable_compression(web.ContentCoding.gzip)
    return response


async def _stream(request: web.Request, text: str) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    await response.write(text.encode())
    await response.write_eof()
    return response
