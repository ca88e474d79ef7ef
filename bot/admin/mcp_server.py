"""The Model Context Protocol face (official ``mcp`` SDK): ``agentic_dispatch`` and friends.

One server definition, two transports:

- streamable HTTP at ``/mcp`` on the bot's own aiohttp server, behind the admin token. The SDK's
  transport is an ASGI app; ``_asgi`` bridges one aiohttp request to it, streaming the answer
  (SSE included) as it is written. The tools call the operations in-process.
- ``dispatchbot mcp`` over stdio, for a local agent session. It is a client of the running bot's
  admin API (URL and token from the settings), not a second bot on the same SQLite file: one
  process owns the store, the runner and the containers, and stdio sees exactly what HTTP sees.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol

import mcp.types as types
from aiohttp import web
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from pydantic import BaseModel, Field

from bot.admin import operations as ops
from bot.admin.api import ServicesGetter, admin_token, authorized, unauthorized
from bot.settings import Settings

log = logging.getLogger(__name__)


class Backend(Protocol):
    """What the tools need; ``ApiClient`` (stdio) and ``LocalBackend`` (HTTP) both provide it."""

    async def dispatch(self, inp: dict[str, Any]) -> dict[str, Any]: ...
    async def runs(self, state: str | None = None) -> list[dict[str, Any]]: ...
    async def show(self, run_id: int) -> dict[str, Any]: ...
    async def cancel(self, run_id: int) -> dict[str, Any]: ...
    async def answer(self, run_id: int, text: str) -> dict[str, Any]: ...


class LocalBackend:
    """The operations of this process, answered as the API would answer them."""

    def __init__(self, get_services: ServicesGetter) -> None:
        self._services = get_services

    async def dispatch(self, inp: dict[str, Any]) -> dict[str, Any]:
        return (await ops.dispatch(self._services(), ops.DispatchInput.model_validate(inp))).model_dump(mode="json")

    async def runs(self, state: str | None = None) -> list[dict[str, Any]]:
        return [r.model_dump(mode="json") for r in await ops.list_runs(self._services(), state=state)]

    async def show(self, run_id: int) -> dict[str, Any]:
        return (await ops.show_run(self._services(), run_id)).model_dump(mode="json")

    async def cancel(self, run_id: int) -> dict[str, Any]:
        return (await ops.cancel_run(self._services(), run_id)).model_dump(mode="json")

    async def answer(self, run_id: int, text: str) -> dict[str, Any]:
        return (await ops.answer_run(self._services(), run_id, text)).model_dump(mode="json")


# The tools ----------------------------------------------------------------------------------


class StatusInput(BaseModel):
    run_id: int | None = Field(None, description="one run; without it, every queued or working run")


class StatusOutput(BaseModel):
    runs: list[ops.RunSummary] = Field(description="the run asked for (with its transitions, links and log "
                                                   "tail), or every live run; each with its usage")


class CancelInput(BaseModel):
    run_id: int


class ResumeInput(BaseModel):
    run_id: int = Field(description="a blocked run")
    answer: str = Field(description="the answer to the agent's question")


DISPATCH_DESCRIPTION = (
    "Dispatch a coding agent (codex, claude, gemini, opencode, ...) to work on a task in a repository of "
    "the Forge. The bot prepares a workspace on a branch of its own (or the pull request's), runs the agent "
    "in a sandboxed container, pushes its commits and opens a pull request; its status comment on the "
    "issue follows the run. Give the repository (owner/name), the task, and one of: an issue or pr number, "
    "or a branch or tag to work on when there is no issue (a task is then required; the pull request goes "
    "into the branch, or from the tag's commit into the default branch, and a commit status follows it). "
    "template, plan_template, persona and variables shape the prompt. Returns at once with the run id and "
    "its state: poll agentic_status until it is completed, failed, blocked or cancelled. With dry_run it "
    "returns the prompt and argv the agent would get and starts nothing."
)

TOOLS = [
    types.Tool(
        name="agentic_dispatch", description=DISPATCH_DESCRIPTION,
        inputSchema=ops.DispatchInput.model_json_schema(), outputSchema=ops.DispatchOutput.model_json_schema(),
    ),
    types.Tool(
        name="agentic_status",
        description="The state of one dispatched run (transitions, Forge links, log tail), or of all active runs; "
                    "each with what its model calls used so far (calls, tokens, cost, by model) and the agent's "
                    "last actions.",
        inputSchema=StatusInput.model_json_schema(), outputSchema=StatusOutput.model_json_schema(),
    ),
    types.Tool(
        name="agentic_cancel", description="Cancel a run: it stops at once and its container is killed.",
        inputSchema=CancelInput.model_json_schema(), outputSchema=ops.RunSummary.model_json_schema(),
    ),
    types.Tool(
        name="agentic_resume",
        description="Answer the question of a blocked run; it resumes in the same workspace.",
        inputSchema=ResumeInput.model_json_schema(), outputSchema=ops.RunSummary.model_json_schema(),
    ),
]


def build_server(backend: Backend) -> Server:
    server: Server = Server("dispatchbot")

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return TOOLS

    @server.call_tool()
    async def call_tool(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Refusals raise; the SDK turns them into an error result with the one-line reason."""
        if name == "agentic_dispatch":
            return await backend.dispatch(arguments)
        if name == "agentic_status":
            run_id = StatusInput.model_validate(arguments).run_id
            runs = [await backend.show(run_id)] if run_id is not None else await backend.runs(state="live")
            return {"runs": runs}
        if name == "agentic_cancel":
            return await backend.cancel(CancelInput.model_validate(arguments).run_id)
        if name == "agentic_resume":
            resume = ResumeInput.model_validate(arguments)
            return await backend.answer(resume.run_id, resume.answer)
        raise ValueError(f"unknown tool {name!r}")

    return server


# Streamable HTTP at /mcp --------------------------------------------------------------------

MANAGER = web.AppKey("mcp_manager", StreamableHTTPSessionManager)


def mount_mcp(app: web.Application, settings: Settings, get_services: ServicesGetter) -> None:
    """Serve MCP at ``/mcp`` behind the admin token; without a token, a 404 that says why."""
    token = admin_token(settings)
    if token is None:
        app.router.add_route("*", "/mcp", _off)
        return
    # Stateless: every request stands alone, so nothing is lost when the bot restarts between calls.
    app[MANAGER] = StreamableHTTPSessionManager(build_server(LocalBackend(get_services)), stateless=True)

    async def running(app: web.Application) -> AsyncIterator[None]:
        # The manager's task group must be entered and left by one task; aiohttp runs a cleanup
        # context's start and end in different ones, so the manager gets a task of its own.
        started, stop = asyncio.Event(), asyncio.Event()

        async def run() -> None:
            async with app[MANAGER].run():
                started.set()
                await stop.wait()

        task = asyncio.create_task(run(), name="mcp")
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait([task, waiting], return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # it failed before it started
            waiting.cancel()
            task.result()
        try:
            yield
        finally:
            stop.set()
            await task

    async def handle(request: web.Request) -> web.StreamResponse:
        if not authorized(request, token):
            return unauthorized()
        return await _asgi(request, app[MANAGER].handle_request)

    app.cleanup_ctx.append(running)
    app.router.add_route("*", "/mcp", handle)


async def _off(request: web.Request) -> web.Response:
    return web.json_response({"error": "MCP is off: no admin_token is set"}, status=404)


AsgiApp = Callable[[dict[str, Any], Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


async def _asgi(request: web.Request, asgi: AsgiApp) -> web.StreamResponse:
    """Run one ASGI HTTP exchange for an aiohttp request, streaming the response as it is sent."""
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
        "scheme": request.scheme, "path": request.path, "raw_path": request.raw_path.encode(),
        "query_string": request.query_string.encode(), "root_path": "",
        "headers": [(k.lower(), v) for k, v in request.raw_headers],
        "client": (request.remote or "", 0), "server": (request.host, 0),
    }
    finished = asyncio.Event()
    response: web.StreamResponse | None = None

    async def receive() -> dict[str, Any]:
        if not request.content.at_eof():
            chunk = await request.content.readany()
            return {"type": "http.request", "body": chunk, "more_body": not request.content.at_eof()}
        await finished.wait()  # the client is gone, or the exchange is over
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal response
        if message["type"] == "http.response.start":
            response = web.StreamResponse(status=message["status"])
            for name, value in message.get("headers", []):
                response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
            await response.prepare(request)
        elif message["type"] == "http.response.body":
            assert response is not None
            if body := message.get("body", b""):
                await response.write(body)
            if not message.get("more_body", False):
                await response.write_eof()

    try:
        await asgi(scope, receive, send)
    finally:
        finished.set()
    if response is None:
        return web.json_response({"error": "the MCP transport gave no answer"}, status=500)
    return response


# stdio --------------------------------------------------------------------------------------


def serve_stdio(settings: Settings) -> int:
    """``dispatchbot mcp``: the same tools over stdio, answered by the running bot's admin API."""
    from mcp.server.stdio import stdio_server

    from bot.admin.client import ApiClient

    server = build_server(ApiClient.from_settings(settings))

    async def main() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    logging.basicConfig(level=logging.WARNING)  # stderr: stdout carries the protocol
    asyncio.run(main())
    return 0
