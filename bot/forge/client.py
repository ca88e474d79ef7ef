"""The one async client for the Forge's REST API (Gitea and Forgejo), in the style of gidgethub.

Paths are given below ``/api/v1``. Errors are typed and carry the status and the Forge's message.
Only idempotent methods are retried here; a POST that creates something is the outbox's business,
which looks before it creates again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bot.forge import paths
from bot.settings import Settings

log = logging.getLogger(__name__)

# Gitea's PATCH sets the fields it is given (the bot edits comments with it): repeating it is harmless.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "PATCH", "DELETE"})


class ForgeError(Exception):
    """A Forge call that failed; ``status`` 0 means no HTTP answer (timeout, refused)."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        self.method, self.path, self.status, self.message = method, path, status, message
        super().__init__(f"{method} {path} → {status or 'no answer'}: {message}")

    @property
    def transient(self) -> bool:
        """Worth retrying later: no answer, a server error, or rate limiting."""
        return self.status == 0 or self.status >= 500 or self.status == 429


class Forge:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        token: str,
        *,
        timeout: float = 15.0,
        retries: int = 2,
        backoff: float = 0.5,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._headers = {"Authorization": f"token {token}", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=float(timeout))
        self._retries = retries
        self._backoff = backoff
        self.calls: Counter[str] = Counter()  # HTTP calls by status class ("2xx"... or "none"), for the metrics

    @classmethod
    def from_settings(cls, session: aiohttp.ClientSession, settings: Settings) -> Forge:
        token = settings.forge_token.get_secret_value() if settings.forge_token else ""
        return cls(session, settings.forge_url or "", token, timeout=settings.forge_timeout)

    async def getitem(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return (await self._request("GET", path, params=params))[0]

    async def getiter(self, path: str, params: dict[str, Any] | None = None, limit: int = 50) -> AsyncIterator[Any]:
        """Every item of a paginated list; stops on a short page (``limit`` is capped by the Forge)."""
        page = 1
        while True:
            items, headers = await self._request("GET", path, params={**(params or {}), "page": page, "limit": limit})
            for item in items or []:
                yield item
            total = headers.get("X-Total-Count")
            seen = (page - 1) * limit + len(items or [])
            if not items or (total is not None and seen >= int(total)) or 'rel="next"' not in headers.get(
                "Link", 'rel="next"'
            ):
                return
            page += 1

    async def post(self, path: str, data: Any = None) -> Any:
        return (await self._request("POST", path, json=data))[0]

    async def patch(self, path: str, data: Any = None) -> Any:
        return (await self._request("PATCH", path, json=data))[0]

    async def delete(self, path: str, data: Any = None) -> Any:
        return (await self._request("DELETE", path, json=data))[0]

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
        attempts = 1 + (self._retries if method in IDEMPOTENT else 0)
        for attempt in range(1, attempts + 1):
            try:
                return await self._once(method, path, **kwargs)
            except ForgeError as e:
                if not e.transient or attempt == attempts:
                    raise
                delay = self._backoff * 2 ** (attempt - 1)
                log.info("retrying %s %s in %.1fs after %s", method, path, delay, e.status or "no answer")
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def answers(self, within: float = 2.0) -> bool:
        """One quick ``GET /version``, never retried: whether the Forge answers at all right now."""
        try:
            async with asyncio.timeout(within):
                await self._once("GET", paths.VERSION)
        except (ForgeError, TimeoutError):
            return False
        return True

    async def _once(self, method: str, path: str, **kwargs: Any) -> tuple[Any, Any]:
        url = f"{self.base_url}/api/v1{path}"
        try:
            async with self._session.request(
                method, url, headers=self._headers, timeout=self._timeout, **kwargs
            ) as resp:
                text = await resp.text()
                self.calls[f"{resp.status // 100}xx"] += 1
                if resp.status >= 400:
                    raise ForgeError(method, path, resp.status, _message(text))
                data = json.loads(text) if text and resp.content_type == "application/json" else None
                return data, resp.headers
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            self.calls["none"] += 1
            raise ForgeError(method, path, 0, type(e).__name__) from None


def _message(text: str) -> str:
    """The Forge's own message (``{"message": ...}``), or the start of the body."""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:200] or "(empty body)"
    if isinstance(data, dict) and data.get("message"):
        return str(data["message"])[:500]
    return text[:200] or "(empty body)"
