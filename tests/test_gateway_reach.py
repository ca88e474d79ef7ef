"""A model call that has the vendor reach out for the agent (``bot.gateway.reach``): with egress
closed, the vendor's servers must not become the agent's way out, fetching a URL it names or
connecting to a server of its choosing. The gateway's own handler on the loopback in front of a
real upstream that records what reaches it, a real store; and the checks on each API's bodies."""

from __future__ import annotations

import json

import aiohttp
import pytest
from aiohttp import web

from bot.gateway.grants import Grants
from bot.gateway.models import ModelProxy
from bot.gateway.observer import NoObserver
from bot.gateway.reach import Refused, outbound
from bot.settings import Settings
from bot.store import RunRequest, SqliteStore
from tests.helpers import serve

EXFIL = "https://paste.example.org/?q=the-private-code"


async def test_a_call_asking_the_vendor_to_fetch_a_url_is_refused_with_egress_closed_and_counted(
        tmp_path, monkeypatch):
    """An image by URL for claude, a live web search for codex: closed, the first never leaves (400,
    said why, counted for the run's record) and the second is sent to search the index only; open,
    both go as they are."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    received: list[dict] = []

    async def upstream(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"type": "message", "content": []})

    app = web.Application()
    app.router.add_post("/v1/messages", upstream)
    app.router.add_post("/v1/responses", upstream)
    runner, url = await serve(app)
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        tokens = {}
        for agent in ("claude", "codex"):
            run = await store.request_run(RunRequest(
                owner="acme", repo="widgets", number=1, is_pull=False, agent=agent, model="", pool=agent,
                review=False, task="t", trigger="comment", requested_by="bob"), trigger_key=agent)
            for state in ("preparing", "running"):
                run = await store.transition(run.id, state)
            tokens[agent] = run
        image = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "describe"}, {"type": "image", "source": {"type": "url", "url": EXFIL}}]}]}
        search = {"model": "m", "input": [], "tools": [{"type": "web_search", "external_web_access": True}]}
        for egress in ("gateway", "open"):
            received.clear()
            refused: list[tuple[int, str]] = []
            settings = Settings(data_dir=tmp_path, egress=egress, base_urls={"claude": url, "codex": url})
            grants = Grants(b"k" * 32, store)
            models = ModelProxy(settings, grants, NoObserver(), lambda run_id, reason: None,
                                refused=lambda run_id, call, kept=refused: kept.append((run_id, call)))
            server = await models.serve("127.0.0.1", 0)
            base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            try:
                async with aiohttp.ClientSession() as http:
                    claude, codex = (grants.token(tokens[a], "agent") for a in ("claude", "codex"))
                    async with http.post(f"{base}/claude/{claude}/v1/messages", json=image,
                                         headers={"x-api-key": claude}) as answer:
                        status, said = answer.status, await answer.json()
                    async with http.post(f"{base}/codex/{codex}/v1/responses", json=search,
                                         headers={"authorization": f"Bearer {codex}"}) as answer:
                        assert answer.status == 200
            finally:
                server.close()
                await models.close()
            if egress == "gateway":
                assert status == 400 and "egress is closed" in said["error"]["message"], said
                assert received == [{**search, "tools": [{"type": "web_search", "external_web_access": False}]}]
                assert refused == [(tokens["claude"].id, "POST /v1/messages asking for a URL or a stored file "
                                                         "for the vendor to fetch (anthropic API)")]
            else:
                assert status == 200 and received == [image, search] and not refused
    finally:
        await store.close()
        await runner.cleanup()


def _message(*blocks: dict, **top) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": list(blocks)}], **top}


REFUSED = [
    ("anthropic", _message({"type": "image", "source": {"type": "url", "url": EXFIL}}), "URL"),
    ("anthropic", _message({"type": "document", "source": {"type": "file", "file_id": "file_1"}}), "stored file"),
    ("anthropic", _message({"type": "tool_result", "tool_use_id": "t", "content": [  # nested in a tool's result
        {"type": "image", "source": {"type": "url", "url": EXFIL}}]}), "URL"),
    ("anthropic", {"system": [{"type": "image", "source": {"type": "url", "url": EXFIL}}], "messages": []}, "URL"),
    ("anthropic", _message(tools=[{"type": "web_fetch_20250910", "name": "web_fetch"}]), "web_fetch"),
    ("anthropic", _message(mcp_servers=[{"type": "url", "url": EXFIL, "name": "x"}]), "MCP"),
    ("anthropic", _message(tools=[{"type": "mcp_toolset", "mcp_server_name": "x"}]), "MCP"),
    ("openai", {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": EXFIL}]}]}, "URL"),
    ("openai", {"input": [{"role": "user", "content": [{"type": "input_file", "file_url": EXFIL}]}]}, "URL"),
    ("openai", {"input": [{"type": "function_call_output", "call_id": "c", "output": [
        {"type": "input_image", "file_id": "file_1"}]}]}, "stored file"),
    ("openai", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": EXFIL}}]}]}, "URL"),
    ("openai", {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}]}, "stored file"),
    ("openai", {"input": [], "tools": [{"type": "mcp", "server_url": EXFIL, "server_label": "x"}]}, "MCP"),
    ("openai", {"input": [], "tools": [{"type": "namespace", "name": "n", "tools": [
        {"type": "mcp", "server_url": EXFIL, "server_label": "x"}]}]}, "MCP"),
    ("openai", {"input": [], "tools": [{"type": "web_search_preview"}]}, "live web search"),
    ("openai", {"input": [], "tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "stored files"),
    ("openai", {"input": [], "previous_response_id": "resp_1"}, "stored response"),
    ("openai", {"input": [], "conversation": "conv_1"}, "stored conversation"),
    ("openai", {"input": [{"type": "item_reference", "id": "msg_1"}]}, "stored item"),
    ("openai", {"input": [], "background": True}, "background"),
    ("openai", {"messages": [], "web_search_options": {}}, "live web search"),
    ("gemini", {"contents": [{"parts": [{"fileData": {"fileUri": EXFIL, "mimeType": "text/html"}}]}]}, "URL"),
    ("gemini", {"contents": [{"parts": [{"file_data": {"file_uri": "files/abc"}}]}]}, "stored file"),
    ("gemini", {"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}, "parts": [
        {"fileData": {"fileUri": EXFIL}}]}}]}]}, "URL"),
    ("gemini", {"contents": [], "systemInstruction": {"parts": [{"fileData": {"fileUri": EXFIL}}]}}, "URL"),
    ("gemini", {"contents": [], "tools": [{"urlContext": {}}]}, "URL context"),
    ("gemini", {"contents": [], "tools": [{"file_search": {}}]}, "stored files"),
    ("gemini", {"contents": [], "cachedContent": "cachedContents/1"}, "stored content"),
]


@pytest.mark.parametrize("vendor, body, said", REFUSED)
def test_each_way_a_vendor_would_reach_out_for_the_agent_is_refused(vendor, body, said):
    with pytest.raises(Refused, match=said):
        outbound(vendor, json.dumps(body).encode())


# What the CLIs send, cut down to what the checks read: tools of their own, a model's tool calls and
# results whose arguments name URLs and files, inline images, a search from the vendor's index.
FORWARDED = [
    ("anthropic", {**_message(
        {"type": "tool_use", "id": "t", "name": "WebFetch", "input": {"type": "url", "url": EXFIL,
                                                                   "source": {"type": "url", "url": EXFIL}}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "text", "text": EXFIL}]}),
        "system": [{"type": "text", "text": "You are Claude Code"}], "stream": True,
        "tools": [{"name": "WebFetch", "description": "d", "input_schema": {"type": "object", "properties": {
            "url": {"type": "string"}, "source": {"type": "object"}}}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 8}]}),
    ("openai", {"model": "m", "store": False, "stream": True, "include": ["reasoning.encrypted_content"],
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": EXFIL}]},
                          {"type": "function_call", "name": "shell", "call_id": "c",
                           "arguments": json.dumps({"image_url": EXFIL})},
                          {"type": "function_call_output", "call_id": "c", "output": "ok"},
                          {"type": "message", "role": "user", "content": [
                              {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}],
                "tools": [{"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {
                    "file_url": {"type": "string"}}}},
                    {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "spawn"}]},
                    {"type": "web_search", "external_web_access": False}]}),
    ("openai", {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]}]}),
    ("gemini", {"contents": [{"role": "user", "parts": [{"text": EXFIL}, {"inlineData": {
                    "mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "web_fetch", "args": {
                    "fileData": {"fileUri": EXFIL}}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "web_fetch", "response": {
                    "fileData": EXFIL}}}]}],
                "systemInstruction": {"parts": [{"text": "You are an interactive CLI agent"}]},
                "tools": [{"functionDeclarations": [{"name": "web_fetch", "parametersJsonSchema": {
                    "properties": {"urlContext": {}}}}]}, {"googleSearch": {}}],
                "generationConfig": {"temperature": 0}}),
    ("ollama", {"model": "m", "messages": [{"role": "user", "content": "hi", "images": [EXFIL]}]}),
]


@pytest.mark.parametrize("vendor, body", FORWARDED)
def test_what_the_clis_send_is_forwarded_byte_for_byte(vendor, body):
    raw = json.dumps(body).encode()
    assert outbound(vendor, raw) is raw


def test_a_body_the_vendor_could_read_otherwise_than_the_gateway_is_refused():
    """Parsers differ on a repeated key (first or last wins) and on what follows a JSON value."""
    hidden = b'{"model": "m", "tools": [{"type": "mcp", "server_url": "' + EXFIL.encode() + b'"}], "tools": []}'
    for body in (hidden, b'{"model": "m"} trailing', b"[]", b"\xff", b"[" * 100_000):
        with pytest.raises(Refused, match="JSON object"):
            outbound("openai", body)
    assert outbound("openai", b"") == b""  # a call without a body (a model list) has nothing to check
