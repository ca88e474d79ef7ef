"""What a model call may ask its vendor to reach for the agent, when egress is closed.

A model API does more than answer. Given a URL it fetches it (an image, a document, a page), given a
server it connects to it (remote MCP), and some calls read what the key's account has stored or go
on after the run. Each is a way out of the closed network: the agent names a host of its choosing
(``https://paste.example.org/?q=<the private code>``) and the vendor's servers call it. With
``egress = "gateway"`` such a call is refused (400 with the reason, and counted in the run's
record). The vendor's own web search stays, answered from its index: OpenAI's live page fetches are
turned off in the call (codex asks for them by default).

The checks follow each API's structure: only where the vendor reads a URL, a server or a stored
object. The model's own tool arguments and tool schemas are never read as requests, since they
can hold anything. A body that is not one JSON object, or repeats a key (parsers differ on which
one wins), is refused: the vendor must get exactly what was checked.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


class Refused(Exception):
    """What a call asked the vendor to reach, in the bot's words (never the agent's)."""


def outbound(vendor: str, body: bytes) -> bytes:
    """The body to forward for a call that reaches nothing but the vendor's model. Raises Refused."""
    if not body or vendor not in _CHECKS:
        return body
    try:
        doc = json.loads(body, object_pairs_hook=_unique)
    except (ValueError, RecursionError) as e:
        raise Refused("a body that is not one JSON object") from e
    if not isinstance(doc, dict):
        raise Refused("a body that is not one JSON object")
    if _CHECKS[vendor](doc):
        return json.dumps(doc, ensure_ascii=False).encode()
    return body


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("a key repeated")
    return doc


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (nothing for anything else: the vendor reads no object there either)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _tools(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The call's tools, those grouped under another (codex's namespaces) too."""
    tools = _dicts(doc.get("tools"))
    while tools:
        tool = tools.pop()
        yield tool
        tools += _dicts(tool.get("tools"))


def _fetched(url: Any) -> bool:
    """A URL the vendor would fetch (``data:`` carries its bytes inline)."""
    return isinstance(url, str) and not url.strip().lower().startswith("data:")


def _anthropic(doc: dict[str, Any]) -> bool:
    if doc.get("mcp_servers"):
        raise Refused("a remote MCP server")
    for tool in _tools(doc):
        kind = str(tool.get("type", ""))
        if kind.startswith("web_fetch"):
            raise Refused("the web_fetch tool")
        if kind.startswith("mcp"):
            raise Refused("a remote MCP server")
    blocks = _dicts(doc.get("system"))
    for message in _dicts(doc.get("messages")):
        blocks += _dicts(message.get("content"))
    while blocks:  # tool results and search results hold blocks of their own
        block = blocks.pop()
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") in ("url", "file"):
            raise Refused("a URL or a stored file for the vendor to fetch")
        if block.get("type") not in ("tool_use", "server_tool_use", "mcp_tool_use"):  # their input is the model's
            blocks += _dicts(block.get("content"))
    return False


_OPENAI_STORED = {"previous_response_id": "a stored response", "conversation": "a stored conversation",
                  "background": "a background response (it would go on after the run, unmetered)",
                  "web_search_options": "a live web search"}


def _openai(doc: dict[str, Any]) -> bool:
    for key, what in _OPENAI_STORED.items():
        if doc.get(key) not in (None, False, ""):  # web_search_options of {} asks for a search
            raise Refused(what)
    changed = False
    for tool in _tools(doc):
        kind = str(tool.get("type", ""))
        if kind == "mcp":
            raise Refused("a remote MCP server")
        if kind == "file_search":
            raise Refused("the account's stored files")
        if kind.startswith("web_search_preview"):
            raise Refused("a live web search")
        if kind.startswith("web_search") and tool.get("external_web_access") is not False:
            tool["external_web_access"] = False  # search the index; open no page the agent names
            changed = True
    items = _dicts(doc.get("input")) + _dicts(doc.get("messages"))
    while items:  # messages and their parts; a tool's output may hold parts too
        item = items.pop()
        kind = item.get("type")
        if kind == "item_reference":
            raise Refused("a stored item")
        image = item.get("image_url")
        if (kind == "input_image" and (_fetched(image) or item.get("file_id"))) or (
                kind == "image_url" and isinstance(image, dict) and _fetched(image.get("url"))):
            raise Refused("a URL or a stored file for the vendor to fetch")
        file = item.get("file") if isinstance(item.get("file"), dict) else item  # chat's parts nest it
        if kind in ("input_file", "file") and (file.get("file_url") or file.get("file_id")):
            raise Refused("a URL or a stored file for the vendor to fetch")
        items += _dicts(item.get("content")) + _dicts(item.get("output"))
    return changed


def _gemini(doc: dict[str, Any]) -> bool:
    if doc.get("cachedContent") or doc.get("cached_content"):
        raise Refused("stored content")
    for tool in _tools(doc):
        if {"urlContext", "url_context"} & tool.keys():
            raise Refused("the URL context tool")
        if {"fileSearch", "file_search"} & tool.keys():
            raise Refused("the account's stored files")
    contents = _dicts(doc.get("contents"))
    for key in ("systemInstruction", "system_instruction"):
        if isinstance(doc.get(key), dict):
            contents.append(doc[key])
    parts = [part for content in contents for part in _dicts(content.get("parts"))]
    while parts:  # a function's response may hold parts of its own
        part = parts.pop()
        if {"fileData", "file_data"} & part.keys():
            raise Refused("a URL or a stored file for the vendor to fetch")
        for key in ("functionResponse", "function_response"):
            if isinstance(part.get(key), dict):
                parts += _dicts(part[key].get("parts"))
    return False


# Each returns whether it changed the call; ollama's API reaches nothing.
_CHECKS = {"anthropic": _anthropic, "openai": _openai, "gemini": _gemini}
