"""A real headless Chromium driven over the Chrome DevTools Protocol, with aiohttp's websocket client.

Debian's ``chromium`` package is the browser (``scripts/setup --test`` installs it); a missing one
fails the test, as a missing Docker engine does. Screenshots go to ``$DISPATCHBOT_ARTIFACTS`` or
``tests/artifacts/`` (git-ignored).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

from .harness import free_port

FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--window-size=1280,900",
]
ARTIFACTS = Path(os.environ.get("DISPATCHBOT_ARTIFACTS") or Path(__file__).parent / "artifacts")


class Browser:
    """One Chromium with one page; ``send`` is a CDP command on that page."""

    def __init__(self, profile: Path) -> None:
        self._profile = profile
        self._proc: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    async def start(self) -> None:
        port = free_port()
        self._proc = self._launch(port)
        self._session = aiohttp.ClientSession()
        deadline = time.monotonic() + 30
        while True:
            try:
                async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    pages = [t for t in await resp.json() if t["type"] == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            assert self._proc.poll() is None, f"chromium exited; see {self._profile / 'chromium.log'}"
            assert time.monotonic() < deadline, "chromium did not open its DevTools port"
            await asyncio.sleep(0.1)
        self._ws = await self._session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.create_task(self._read())

    def _launch(self, port: int) -> subprocess.Popen[bytes]:
        binary = shutil.which("chromium")
        assert binary, "Debian's chromium package is needed (scripts/setup --test installs it)"
        self._profile.mkdir(parents=True, exist_ok=True)
        with open(self._profile / "chromium.log", "wb") as log:
            return subprocess.Popen(
                [binary, *FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-address=127.0.0.1",
                 f"--remote-debugging-port={port}", "about:blank"],
                stdout=log, stderr=log,
            )

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._ws:
            await self._ws.close()
        if self._session:
            await self._session.close()
        if self._proc and self._proc.poll() is None:
            self._proc.kill()
            await asyncio.to_thread(self._proc.wait)

    async def _read(self) -> None:
        async for message in self._ws:
            data = message.json()
            future = self._pending.pop(data.get("id", 0), None)  # events carry no id
            if future and not future.done():
                if "error" in data:
                    future.set_exception(AssertionError(f"CDP error: {data['error']}"))
                else:
                    future.set_result(data.get("result", {}))

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        future = self._pending[command_id] = asyncio.get_running_loop().create_future()
        await self._ws.send_json({"id": command_id, "method": method, "params": params})
        async with asyncio.timeout(30):
            return await future

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in answer, answer["exceptionDetails"]
        return answer["result"].get("value")

    async def open(self, url: str) -> None:
        """Navigate and wait until the document has loaded."""
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete' && location.href !== 'about:blank'")

    async def wait_for(self, expression: str, within: float = 30.0) -> Any:
        """Poll a JavaScript expression in the page until it is truthy; returns its value."""
        deadline = time.monotonic() + within
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            assert time.monotonic() < deadline, f"timed out waiting in the page for: {expression}"
            await asyncio.sleep(0.1)

    async def screenshot(self, name: str) -> Path:
        """The whole page as a PNG under the artifacts directory."""
        size = (await self.send("Page.getLayoutMetrics"))["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
        shot = await self.send("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)
        return _save(f"{name}.png", base64.b64decode(shot["data"]))


def _save(name: str, data: bytes) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    path.write_bytes(data)
    return path
