"""A pytest fixture for tests that need a running fake Forge.

Use it with ``pytest_plugins = ["tests.fakeforge.fixtures"]`` in a conftest.py, or import ``fake_forge``
into a test module. At teardown it fails the test if the client broke the spec or the fake broke itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .forge import FakeForge


@pytest.fixture
async def fake_forge(tmp_path: Path) -> AsyncIterator[FakeForge]:
    """A started Gitea-flavoured FakeForge (no users, repos or hooks yet)."""
    forge = FakeForge(tmp_path / "fakeforge")
    await forge.start()
    yield forge
    await forge.close()
    assert forge.internal_errors == [], "the fake forge failed on a request:\n" + "\n".join(forge.internal_errors)
    assert forge.violations == [], "spec violations:\n" + "\n".join(map(str, forge.violations))
