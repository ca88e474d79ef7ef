"""A plain (non-editable) install works: the wheel carries the templates, the example config and the
image manifest, and ``dispatchbot dry-run`` runs from a directory that is not the checkout."""

from __future__ import annotations

import asyncio
import os
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    [built] = out.glob("dispatchbot-*.whl")
    return built


def test_the_wheel_ships_the_data_files(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(ROOT)) for p in (ROOT / "bot").rglob("*") if p.suffix in {".md", ".toml", ".yaml"}}
    assert {"bot/templates/coding.md", "bot/dispatchbot.example.toml", "bot/image/manifest.toml"} <= shipped
    assert shipped <= names, shipped - names


async def test_dry_run_from_an_installed_wheel_in_another_directory(wheel: Path, world, tmp_path):
    """The venv gets only the wheel; its dependencies come from ours through a .pth file, so the test
    needs no index and ``bot`` can only be the installed copy (our editable install's hook is not read)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    forge, repo = world["forge"], world["repo"]
    issue = await forge.create_issue(repo, world["bob"], title="Make widgets shine", body="")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHBOT_") and k != "PYTHONPATH"}
    env |= {
        "DISPATCHBOT_FORGE_URL": forge.url,
        "DISPATCHBOT_FORGE_TOKEN": world["bot"].token,
        "DISPATCHBOT_WEBHOOK_SECRET": "packaging-test-secret-0123",
        "DISPATCHBOT_DATA_DIR": str(tmp_path / "data"),
    }
    proc = await asyncio.create_subprocess_exec(  # the fake Forge answers from this test's event loop
        str(venv / "bin" / "dispatchbot"), "dry-run", f"acme/widgets#{issue.number}", "codex", "polish the widgets",
        cwd=elsewhere, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120.0)
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert text.startswith("argv: ") and "polish the widgets" in text
    template = (ROOT / "bot" / "templates" / "coding.md").read_text().splitlines()
    assert [line for line in template if line and "{" not in line][0] in text, "the shipped template is in the prompt"
    where = subprocess.run([python, "-c", "import bot; print(bot.__file__)"], cwd=elsewhere, env=env,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(purelib), where
