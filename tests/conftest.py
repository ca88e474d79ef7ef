"""Shared fixtures: the Docker ones, a fake Forge, and the bot running in-process on a real port."""

import pytest

from tests.docker_fixtures import *  # noqa: F403  (agent_image, docker_label, executor, ...)
from tests.harness import AGENT_KEYS, BotHarness
from tests.fakeforge.fixtures import fake_forge  # noqa: F401  (a fixture)


@pytest.fixture
async def forge(tmp_path):
    from tests.fakeforge import FakeForge

    f = FakeForge(root=tmp_path / "forge")
    await f.start()
    yield f
    await f.close()
    assert f.violations == [], f"the bot broke the Forge's API spec: {f.violations}"
    assert f.internal_errors == [], f"the fake Forge failed on requests: {f.internal_errors}"


@pytest.fixture
async def world(forge, tmp_path):
    """A Forge with the bot's account (repo admin), a writer, a reader and one repository."""
    bot = forge.add_user("dispatchbot")
    bob = forge.add_user("bob")
    rita = forge.add_user("rita")
    repo = forge.add_repo("acme", "widgets", files={"README.md": "# widgets\n", "src/app.py": "print('hi')\n"})
    forge.set_permission(repo, "dispatchbot", "admin")
    forge.set_permission(repo, "bob", "write")
    forge.set_permission(repo, "rita", "read")
    return {"forge": forge, "bot": bot, "bob": bob, "rita": rita, "repo": repo, "tmp": tmp_path}


@pytest.fixture
async def make_bot(world):
    """Start the bot against the fake Forge, with settings overrides; stops it afterwards."""
    started = []

    async def start(**overrides) -> BotHarness:
        bot = BotHarness(world["forge"], world["bot"].token, world["tmp"] / "bot", **overrides)
        await bot.start()
        world["forge"].add_hook(world["repo"], url=bot.url + "/webhook", secret=bot.secret)
        started.append(bot)
        return bot

    yield start
    for bot in started:
        await bot.stop()


@pytest.fixture
async def engine_bot(make_bot, agent_image, monkeypatch):
    """Start the bot with the scripted agent image, small container limits and a dummy key for each
    preset (the bot reads keys from its environment; tests that want one missing delete it)."""
    for name, value in AGENT_KEYS.items():
        monkeypatch.setenv(name, value)

    async def start(**overrides):
        limits = {"memory": "256m", "cpus": 1.0, "pids": 256, "timeout": 60.0, "grace": 1.0}
        limits |= overrides.pop("limits", {})
        return await make_bot(**{"image": agent_image, **overrides}, limits=limits)

    return start


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole session (see tests/postgres.py)."""
    from tests.postgres import PostgresServer

    server = PostgresServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return postgres_server.create_database()
