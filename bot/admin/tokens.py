"""The one bearer-token check of the admin API, MCP and the dashboard: constant time, empty never matches."""

from __future__ import annotations

import hmac

from aiohttp import web


def matches(offered: str, expected: list[str]) -> bool:
    """Whether ``offered`` is one of ``expected``, compared with every one (no early exit on a match);
    an empty value, offered or expected, never matches."""
    found = False
    for value in expected:
        found |= bool(offered and value) and hmac.compare_digest(offered.encode(), value.encode())
    return found


def bearer(request: web.Request) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, else ""."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return given.strip() if scheme.lower() == "bearer" else ""


def authorized(request: web.Request, expected: list[str]) -> bool:
    return matches(bearer(request), expected)
