"""The bot's aiohttp application served in-process on a real loopback port, for integration tests."""

from __future__ import annotations

import socket
from pathlib import Path

from aiohttp import web

from bot.app import ENGINE, INTAKE, SERVICES, create_app
from bot.executor.docker import DockerExecutor
from bot.gateway.service import dismantle
from bot.runs.containers import INSTANCE_LABEL
from bot.settings import Settings

from .helpers import wait_for

SECRET = "test-webhook-secret"
# A key for every preset that needs one, so runs pass preflight; the scripted agents ignore them.
AGENT_KEYS = {
    name: "test-key-not-real"
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "CODERABBIT_API_KEY")
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve_locally(app: web.Application, port: int) -> web.AppRunner:
    """Serve ``app`` on the loopback ``port``; the runner's ``cleanup()`` stops it."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


class BotHarness:
    def __init__(self, forge, token: str, data_dir: Path, **overrides) -> None:
        self.secret = SECRET
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.settings = Settings(
            forge_url=forge.url,
            forge_token=token,
            webhook_secret=self.secret,
            data_dir=data_dir,
            **({"gateway": {"port": 0, "proxy_port": 0}} | overrides),
        )
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self.app = create_app(self.settings)
        self._runner = await serve_locally(self.app, self.port)

    async def stop(self) -> None:
        """Stop the app, then remove whatever container a failed test left behind."""
        if self._runner:
            await self._runner.cleanup()
            self._runner = None
            docker = DockerExecutor()
            try:
                for info in await docker.list(f"{INSTANCE_LABEL}={self.settings.instance}"):
                    await docker.remove(info.id)
                await dismantle(docker, self.settings)  # what the bot kept for a container left behind
            finally:
                await docker.close()

    @property
    def services(self):
        return self.app[SERVICES]

    @property
    def store(self):
        return self.services.store

    @property
    def engine(self):
        return self.app[ENGINE]

    async def settle(self) -> None:
        """Wait until every delivery received so far has been handled."""
        await self.app[INTAKE].drained()

    async def wait_for(self, predicate, timeout: float = 30.0, interval: float = 0.05):
        """Poll an async predicate until it returns something truthy."""
        return await wait_for(predicate, timeout, interval)
