"""MCP through the SDK's own client, over streamable HTTP (/mcp) and over stdio (``dispatchbot mcp``)."""

import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from bot.admin.operations import DispatchInput, DispatchOutput

TOKEN = "admin-token-for-tests-0123456789"
ROOT = Path(__file__).resolve().parents[1]


@asynccontextmanager
async def http_session(bot):
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as http:
        async with streamable_http_client(bot.url + "/mcp", http_client=http) as (r, w, _):
            async with ClientSession(r, w) as session:
                await session.initialize()
                yield session


@asynccontextmanager
async def stdio_session(bot):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHBOT_")}
    env |= {"DISPATCHBOT_CONFIG": "/nonexistent", "DISPATCHBOT_API_URL": bot.url, "DISPATCHBOT_ADMIN_TOKEN": TOKEN}
    params = StdioServerParameters(command=sys.executable, args=["-m", "bot.cli", "mcp"], env=env, cwd=ROOT)
    async with stdio_client(params) as (r, w):
        async with ClientSession(r, w) as session:
            await session.initialize()
            yield session


TRANSPORTS = {"http": http_session, "stdio": stdio_session}


async def call(session, tool, **arguments):
    result = await session.call_tool(tool, arguments)
    assert not result.isError, result.content
    return result.structuredContent


async def status_until(bot, session, run_id, states):
    async def reached():
        [run] = (await call(session, "agentic_status", run_id=run_id))["runs"]
        return run if run["state"] in states else None

    return await bot.wait_for(reached, timeout=60)


@pytest.fixture
async def bot(engine_bot, world):
    bot = await engine_bot(admin_token=TOKEN)
    world["issue"] = await world["forge"].create_issue(world["repo"], world["bob"], title="Notes")
    return bot


@pytest.mark.docker
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_dispatch_dry_run_then_a_real_run_to_its_pull_request(bot, world, transport):
    forge, repo = world["forge"], world["repo"]
    async with TRANSPORTS[transport](bot) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"agentic_dispatch", "agentic_status", "agentic_cancel", "agentic_resume"}
        assert tools["agentic_dispatch"].inputSchema == DispatchInput.model_json_schema()
        assert tools["agentic_dispatch"].outputSchema == DispatchOutput.model_json_schema()

        dry = await call(session, "agentic_dispatch", repo="acme/widgets", issue=1, agent="claude",
                         task="add notes", persona="maintainer", dry_run=True)
        assert dry["success"] and dry["run_id"] is None and dry["argv"][0] == "claude"
        assert "You act as a long-time maintainer" in dry["prompt"]
        assert await bot.store.runs() == []

        out = await call(session, "agentic_dispatch", repo="acme/widgets", issue=1, agent="codex",
                         task="add notes scenario:edit-commit")
        assert out["success"] and out["state"] == "queued" and out["output_file"].endswith(".meta/container.log")
        active = (await call(session, "agentic_status"))["runs"]
        assert [r["id"] for r in active] in ([out["run_id"]], [])  # it may have ended already
        run = await status_until(bot, session, out["run_id"], ("completed", "failed"))
        assert run["state"] == "completed", run["reason"]
        assert "scenario: edit-commit" in run["log_tail"]

    async def pull():
        return [p for p in forge.pulls(repo) if p.head_branch == run["branch"]]

    [pr] = await bot.wait_for(pull)
    assert f"Closes #{world['issue'].number}" in pr.issue.body
    assert forge.branch_sha(repo, run["branch"]) == pr.head_sha


@pytest.mark.docker
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_a_blocked_run_and_cancel_a_hanging_one(bot, world, transport):
    async with TRANSPORTS[transport](bot) as session:
        out = await call(session, "agentic_dispatch", repo="acme/widgets", issue=1, task="apply scenario:answer")
        blocked = await status_until(bot, session, out["run_id"], ("blocked", "failed", "completed"))
        assert blocked["state"] == "blocked" and "Which file" in blocked["question"]
        resumed = await call(session, "agentic_resume", run_id=out["run_id"], answer="AGENT_NOTES.md")
        assert resumed["state"] == "queued"
        done = await status_until(bot, session, out["run_id"], ("completed", "failed"))
        assert done["state"] == "completed", done["reason"]

        issue = await world["forge"].create_issue(world["repo"], world["bob"], title="Hang")
        hang = await call(session, "agentic_dispatch", repo="acme/widgets", issue=issue.number,
                          task="wait scenario:hang")
        await status_until(bot, session, hang["run_id"], ("running",))
        cancelled = await call(session, "agentic_cancel", run_id=hang["run_id"])
        assert cancelled["state"] == "cancelled"
        refused = await session.call_tool("agentic_resume", {"run_id": hang["run_id"], "answer": "x"})
        assert refused.isError and "only a blocked run can be answered" in refused.content[0].text

    async def container_gone():
        return not await bot.engine.runner.containers()

    await bot.wait_for(container_gone)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_bad_input_is_an_error_result(make_bot, world, transport):
    bot = await make_bot(admin_token=TOKEN, frozen=True)
    async with TRANSPORTS[transport](bot) as session:
        result = await session.call_tool("agentic_dispatch", {"repo": "acme/widgets", "issue": 1, "persona": "x"})
        assert result.isError and "unknown persona 'x'; known: " in result.content[0].text
        result = await session.call_tool("agentic_dispatch", {"issue": 1})
        assert result.isError and "'repo' is a required property" in result.content[0].text
        result = await session.call_tool("agentic_status", {"run_id": 5})
        assert result.isError and "no run 5" in result.content[0].text
    assert await bot.store.runs() == []


async def test_a_failed_dry_run_is_an_error_result_with_the_apis_reason(make_bot, world):
    bot = await make_bot(admin_token=TOKEN, frozen=True)
    await world["forge"].create_issue(world["repo"], world["bob"], title="Notes")
    world["forge"].faults(1.0, kinds=["before_502"], only=r"/issues/1/comments$")  # read by prepare only
    async with http_session(bot) as session:
        result = await session.call_tool("agentic_dispatch", {"repo": "acme/widgets", "issue": 1, "dry_run": True})
    assert result.isError and result.content[0].text.startswith("the Forge failed: GET "), result.content


async def test_mcp_over_http_needs_the_token(make_bot):
    on = await make_bot(admin_token=TOKEN)
    off = await make_bot()
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.post(on.url + "/mcp", json=body, headers=headers) as resp:
                assert resp.status == 401
        async with http.post(off.url + "/mcp", json=body, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert resp.status == 404 and (await resp.json())["error"] == "MCP is off: no admin_token is set"
