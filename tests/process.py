"""The bot as a separate process, so tests can kill -9 it and start it again on the same data."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

from .harness import SECRET, free_port


class BotProcess:
    def __init__(self, forge_url: str, token: str, data_dir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.secret = SECRET
        self.data_dir = data_dir
        self.log = data_dir.parent / f"bot-{self.port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHBOT_")}
        self.env = base | {
            "DISPATCHBOT_CONFIG": "/nonexistent",
            "DISPATCHBOT_FORGE_URL": forge_url,
            "DISPATCHBOT_FORGE_TOKEN": token,
            "DISPATCHBOT_WEBHOOK_SECRET": SECRET,
            "DISPATCHBOT_DATA_DIR": str(data_dir),
            "DISPATCHBOT_PORT": str(self.port),
            "DISPATCHBOT_HOST": "127.0.0.1",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "bot.cli", "serve"], env=self.env, stdout=out,
                                     stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"the bot exited: {self.log.read_text()[-3000:]}")
                try:
                    async with session.get(self.url + "/healthz") as resp:
                        await resp.read()
                        return
                except aiohttp.ClientError:
                    await asyncio.sleep(0.1)
        raise AssertionError("the bot did not come up")

    def kill(self) -> None:
        """kill -9: no cleanup of any kind runs."""
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    async def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 20)
            except subprocess.TimeoutExpired:
                self.kill()

    def query(self, sql: str, *args) -> list[tuple]:
        db = sqlite3.connect(self.data_dir / "dispatchbot.sqlite3", timeout=10)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
