"""Fixtures for tests against the real Docker engine; import them from ``tests/conftest.py``.

CI guarantees an engine, so a missing one is a failure, never a skip. Every container a test starts
carries a label unique to that test (``docker_label``); at teardown ``executor`` force-removes whatever
still carries it and fails the test, because the code under test must clean up after itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiodocker
import pytest

from bot.executor.docker import ContainerSpec, DockerExecutor, Mount
from bot.image.build import Image, Recipe
from bot.image.build import build as build_real_image
from bot.settings import Limits
from tests.agentimage.build import build
from tests.helpers import git

TEST_LABEL = "dispatchbot.test"
WORKDIR = "/work/repo"


@pytest.fixture(scope="session")
def agent_image() -> str:
    """The scripted agent image, built once per content change (about half a second)."""
    res = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"Docker engine unavailable (CI guarantees one): {res.stderr.strip()}", pytrace=False)
    return build()


HOST_CA_CERTS = Path("/usr/local/share/ca-certificates")


def real_image_recipe() -> Recipe:
    """The agent image's recipe as ``scripts/setup`` builds it (with the host's extra CAs), so it is cached."""
    return Recipe.load(sorted(HOST_CA_CERTS.glob("*.crt")))


@pytest.fixture(scope="session")
def real_agent_image() -> Image:
    """The real agent image (``bot/image``): found by its recipe hash after ``scripts/setup``, else built
    (about two minutes: tests using it carry ``pytest.mark.timeout(900)`` for that case)."""

    async def find_or_build() -> Image:
        async with aiodocker.Docker() as docker:
            return await build_real_image(docker, real_image_recipe(), lambda line: print(line, file=sys.stderr))

    return asyncio.run(find_or_build())


@pytest.fixture
def docker_label() -> str:
    """``dispatchbot.test=<unique>``: tags this test's containers for listing and cleanup."""
    return f"{TEST_LABEL}={uuid.uuid4().hex[:12]}"


@pytest.fixture
async def executor(docker_label: str) -> AsyncIterator[DockerExecutor]:
    """A fresh executor; afterwards, no container of this test may remain."""
    ex = DockerExecutor()
    if not await ex.ping():
        await ex.close()
        pytest.fail("Docker engine unavailable (CI guarantees one)", pytrace=False)
    yield ex
    leftovers = await ex.list(label=docker_label)
    for info in leftovers:
        await ex.remove(info.id)
    await ex.close()
    assert not leftovers, f"containers left behind: {[c.name for c in leftovers]}"


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A git clone with two commits, writable by the container user (see ``container_user``)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# demo\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    (repo / "src.py").write_text('"""Demo."""\n\n\ndef add(a, b):\n    return a + b\n')
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "feat: add")
    if os.getuid() == 0:
        for path in [tmp_path, *tmp_path.rglob("*")]:
            os.chown(path, 1000, 1000, follow_symlinks=False)
    return repo


def container_user() -> str:
    """The image's ``agent`` (1000) when we can chown to it, else our own uid so mounts stay writable."""
    return "1000:1000" if os.getuid() == 0 else f"{os.getuid()}:{os.getgid()}"


@pytest.fixture
def make_spec(agent_image: str, docker_label: str, workspace: Path) -> Callable[..., ContainerSpec]:
    """Build a labelled spec running ``argv`` in the mounted workspace; keywords override fields."""
    key, value = docker_label.split("=")
    counter = iter(range(1_000_000))

    def make(argv: list[str], **overrides) -> ContainerSpec:
        n = next(counter)
        fields = dict(
            name=f"dispatchbot-test-{value}-{n}",
            image=agent_image,
            argv=argv,
            workdir=WORKDIR,
            mounts=[Mount(workspace, WORKDIR)],
            env={"HOME": "/tmp"},
            labels={key: value, "dispatchbot.run": f"{value}-{n}", "dispatchbot.workspace": str(workspace)},
            limits=Limits(memory="256m", cpus=1.0, pids=128, user=container_user()),
        )
        return ContainerSpec(**{**fields, **overrides})

    return make
