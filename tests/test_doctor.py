"""``dispatchbot doctor`` as the console script runs it, against the real Docker engine and the test image."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-doctor-secret-value"


def doctor(tmp_path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHBOT_") and not k.endswith("_API_KEY")}
    env = clean | {"DISPATCHBOT_CONFIG": "/nonexistent", "DISPATCHBOT_DATA_DIR": str(tmp_path)} | env
    return subprocess.run([sys.executable, "-m", "bot.cli", "doctor"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def sections(output: str) -> dict[str, str]:
    """Each agent's report: its verdict, then its indented lines."""
    found: dict[str, list[str]] = {}
    name = ""
    for line in output.splitlines():
        if line.startswith("  "):
            found[name].append(line)
        elif ": " in line and not line.startswith("ready: "):
            name, verdict = line.split(": ", 1)
            found[name] = [verdict]
    return {name: "\n".join(lines) for name, lines in found.items()}


def test_doctor_reports_image_cli_key_and_endpoint_per_agent(tmp_path, agent_image):
    agents = {"aider": {"argv": ["aider", "{prompt}"]}, "plain": {"argv": ["scripted-agent", "{prompt}"]}}
    res = doctor(tmp_path, DISPATCHBOT_IMAGE=agent_image, OPENAI_API_KEY=KEY, DISPATCHBOT_AGENTS=json.dumps(agents),
                 DISPATCHBOT_BASE_URLS=json.dumps({"claude": "http://127.0.0.1:9/anthropic"}))
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert KEY not in out + res.stderr
    report = sections(out)
    assert report["codex"] == "\n".join([
        "ready",
        f"  image     {agent_image} (present)",
        "  cli       codex scripted",  # from the image's dispatchbot.clis label
        "  auth      OPENAI_API_KEY set",
        "  endpoint  https://api.openai.com/v1 (the CLI's default)",
    ])
    assert report["claude"].startswith(
        "NOT READY: claude needs `ANTHROPIC_API_KEY` in the bot's environment or `credentials.claude`"
    )
    assert "  auth      ANTHROPIC_API_KEY not set" in report["claude"]
    assert "  endpoint  http://127.0.0.1:11434" in report["local"]
    assert "  endpoint  http://127.0.0.1:9/anthropic" in report["claude"]  # base_urls.claude
    assert "  cli       scripted-agent scripted-agent (scripted-agent)" in report["plain"]  # by --version
    assert report["aider"].startswith(f"NOT READY: the image `{agent_image}` has no `aider` CLI")
    assert "  cli       aider (not in the image)" in report["aider"]
    assert out.rstrip().endswith("ready: codex, codex:review, local, plain")


def test_doctor_says_a_credentials_dir_puts_the_credentials_inside_the_container(tmp_path, agent_image):
    creds = tmp_path / "claude-login"
    creds.mkdir()
    res = doctor(tmp_path, DISPATCHBOT_IMAGE=agent_image, DISPATCHBOT_CREDENTIALS=json.dumps({"claude": [str(creds)]}))
    assert "its credentials are inside the container" in sections(res.stdout)["claude"]
    assert "inside the container" not in sections(res.stdout)["codex"]


def test_doctor_says_coderabbits_key_is_inside_the_container(tmp_path, agent_image):
    """Its CLI takes no base URL: the gateway cannot stand in for its key."""
    res = doctor(tmp_path, DISPATCHBOT_IMAGE=agent_image, CODERABBIT_API_KEY=KEY)
    assert "its credentials are inside the container (its CLI cannot be pointed at the gateway" in sections(
        res.stdout)["coderabbit"]


def test_doctor_fails_when_the_default_image_is_missing(tmp_path):
    res = doctor(tmp_path, DISPATCHBOT_IMAGE="dispatchbot-no-such-image:1", OPENAI_API_KEY=KEY)
    assert res.returncode == 1
    assert "  image     dispatchbot-no-such-image:1 (missing)" in sections(res.stdout)["codex"]
    assert res.stdout.rstrip().endswith("ready: none")


def test_doctor_warns_of_settings_the_agent_can_reach_the_host_through(tmp_path, agent_image):
    res = doctor(tmp_path, DISPATCHBOT_IMAGE=agent_image, OPENAI_API_KEY=KEY, DISPATCHBOT_CONTAINER_NETWORK="host")
    assert res.returncode == 0, res.stderr
    [warning] = [line for line in res.stdout.splitlines() if line.startswith("warning: ")]
    assert 'container_network = "host"' in warning


async def test_the_start_up_log_warns_of_them_too(make_bot, caplog):
    await make_bot(container_network="host", docker_url="tcp://127.0.0.1:2375")
    warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith("security: ")]
    assert len(warned) == 2 and "docker_url" in warned[0] and "host" in warned[1], warned
