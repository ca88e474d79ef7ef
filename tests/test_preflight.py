"""Preflight: a run that cannot authenticate or start fails at once, saying what is missing, with no container."""

import io
import subprocess
import tarfile
import time
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from bot.runs import preflight
from bot.runs.agents import known_agents, resolve
from bot.executor.docker import DockerExecutor
from bot.settings import CustomAgent, Settings
from tests.harness import AGENT_KEYS

from .helpers import bot_comments, dispatch, ended, reported


def settings(**kw) -> Settings:
    return Settings(forge_url="http://forge.invalid", **kw)


# The checks, as plain functions --------------------------------------------------------------


def test_a_preset_without_its_key_names_the_key_and_the_credentials_setting():
    s = settings()
    assert preflight.missing_key(s, resolve(s, "codex"), {}) == (
        "codex needs `OPENAI_API_KEY` in the bot's environment or `credentials.codex`"
    )
    assert preflight.missing_key(s, resolve(s, "codex:review"), {"OPENAI_API_KEY": ""}) is not None
    assert preflight.missing_key(s, resolve(s, "codex"), {"OPENAI_API_KEY": "k"}) is None
    assert "`ANTHROPIC_API_KEY`" in preflight.missing_key(s, resolve(s, "claude"), {"OPENAI_API_KEY": "k"})
    assert "`CODERABBIT_API_KEY`" in preflight.missing_key(s, resolve(s, "coderabbit"), {})


def test_gemini_takes_either_key_and_local_needs_none():
    s = settings()
    gemini = resolve(s, "gemini:flash")
    assert preflight.missing_key(s, gemini, {}) == (
        "gemini needs `GEMINI_API_KEY` or `GOOGLE_API_KEY` in the bot's environment or `credentials.gemini`"
    )
    assert preflight.missing_key(s, gemini, {"GOOGLE_API_KEY": "k"}) is None
    assert preflight.missing_key(s, resolve(s, "local"), {}) is None


def test_an_existing_credentials_dir_stands_in_for_the_key(tmp_path):
    s = settings(credentials={"claude": [str(tmp_path)]})
    assert preflight.missing_key(s, resolve(s, "claude"), {}) is None
    gone = settings(credentials={"claude": [str(tmp_path / "gone")]})
    reason = preflight.missing_key(gone, resolve(gone, "claude"), {})
    assert reason == (
        "claude needs `ANTHROPIC_API_KEY` in the bot's environment or `credentials.claude`"
        f" (configured: `{tmp_path / 'gone'}`, not a directory)"
    )


def test_a_custom_agent_needs_one_of_its_env_list_or_nothing():
    s = settings(agents={
        "aider": CustomAgent(argv=["aider", "{prompt}"], env=["AIDER_KEY", "OPENAI_API_KEY"], credentials=["/nope"]),
        "tool": CustomAgent(argv=["tool", "{prompt}"]),
        "local": CustomAgent(argv=["codex", "{prompt}"], env=["OPENAI_API_KEY"]),  # shadows the keyless preset
    })
    assert preflight.missing_key(s, resolve(s, "aider"), {}) == (
        "aider needs `AIDER_KEY` or `OPENAI_API_KEY` in the bot's environment or `agents.aider.credentials`"
        " (configured: `/nope`, not a directory)"
    )
    assert preflight.missing_key(s, resolve(s, "aider"), {"OPENAI_API_KEY": "k"}) is None
    assert preflight.missing_key(s, resolve(s, "tool"), {}) is None
    assert preflight.missing_key(s, resolve(s, "local"), {}) is not None


# Images, against the real engine ------------------------------------------------------------


def created_containers(label: str, since: float) -> list[str]:
    """Containers created since ``since`` carrying ``label``, from the engine's event log."""
    out = subprocess.run(
        ["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time() + 0.5:.3f}",
         "--filter", "type=container", "--filter", "event=create", "--filter", f"label={label}",
         "--format", "{{.Actor.ID}}"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.split()


@pytest.fixture
async def images(tmp_path):
    executor = DockerExecutor()
    yield preflight.Images(executor, settings(data_dir=tmp_path))
    await executor.close()


async def test_the_label_answers_for_listed_clis_and_a_probe_once_for_others(images, agent_image, tmp_path):
    s = settings(data_dir=tmp_path)
    image = await images.get(agent_image)
    assert image is not None and preflight.listed_clis(image)["codex"] == "scripted"
    since = time.time()
    assert await images.has_cli(image, "codex") is True
    assert created_containers(f"{preflight.PROBE_LABEL}={s.instance}", since) == []
    assert await images.has_cli(image, "scripted-agent") is True
    assert await images.has_cli(image, "aider") is False
    assert await images.has_cli(image, "aider") is False  # cached: no second container
    assert len(created_containers(f"{preflight.PROBE_LABEL}={s.instance}", since)) == 2
    assert await images.run(agent_image, ["codex", "--version"]) == (0, "codex (scripted-agent)")


@pytest.fixture(scope="session")
def shell_less_image() -> str:
    """An image holding only busybox, as ``/bin/tool``: no ``sh`` to look for a CLI with."""
    tag = "dispatchbot-test-shell-less:latest"
    found = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin/tool")
        data = Path("/bin/busybox").read_bytes()
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
    res = subprocess.run(["docker", "import", "--change", "ENV PATH=/bin", "-", tag], input=buf.getvalue(),
                         capture_output=True, check=True)
    return res.stdout.decode().strip()


async def test_without_a_shell_in_the_image_nothing_is_claimed(images, shell_less_image, tmp_path):
    image = await images.get(shell_less_image)
    assert await images.has_cli(image, "tool") is None
    s = settings(data_dir=tmp_path, agents={"tool": CustomAgent(image=shell_less_image, argv=["tool", "{prompt}"])})
    assert await preflight.check(s, resolve(s, "tool"), {}, images) is None


async def test_check_names_a_missing_image_and_a_missing_cli(images, agent_image, tmp_path):
    s = settings(data_dir=tmp_path, image="dispatchbot-no-such-image:1", agents={
        "aider": CustomAgent(image=agent_image, argv=["aider", "{prompt}"]),
        "mine": CustomAgent(image="someone/else:2", argv=["mine", "{prompt}"]),
    })
    assert await preflight.check(s, resolve(s, "codex"), {}, images) == (
        "codex needs `OPENAI_API_KEY` in the bot's environment or `credentials.codex`; "
        "the image `dispatchbot-no-such-image:1` is not present on the Docker host: build it with `dispatchbot image build`"
    )
    assert await preflight.check(s, resolve(s, "mine"), {}, images) == (
        "the image `someone/else:2` is not present on the Docker host: build or pull it"
    )
    assert await preflight.check(s, resolve(s, "aider"), {}, images) == (
        f"the image `{agent_image}` has no `aider` CLI; use an image that has `aider` on its PATH"
    )
    assert preflight.cli_missing(replace(resolve(s, "coderabbit"), image="img")) == (
        "the image `img` has no `coderabbit` CLI; build the image with --coderabbit FILE"
    )
    assert await preflight.problem(s, "nobody", {}, images) == (
        f"unknown agent 'nobody'; known agents: {', '.join(known_agents(s))}"
    )


# Runs end to end ----------------------------------------------------------------------------


async def test_without_a_key_the_run_fails_at_once_with_the_reason_and_no_container(world, engine_bot, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    bot = await engine_bot(backoff={"failures": 1, "window": 60.0, "pause": 1800.0})
    since = time.time()
    issue = await dispatch(world, "/dispatch codex add notes scenario:edit-commit")
    [run] = await ended(bot)
    reason = "codex needs `OPENAI_API_KEY` in the bot's environment or `credentials.codex`"
    assert (run.state, run.reason) == ("failed", reason)
    assert [c.to_state for c in await bot.store.history(run.id)] == ["queued", "preparing", "failed"]
    assert created_containers(f"dispatchbot.instance={bot.settings.instance}", since) == []
    await reported(bot, run.id)
    [comment] = bot_comments(world, issue.number)
    assert "❌ failed" in comment.body and f"Reason: {reason}" in comment.body
    pool = await bot.store.pool("codex")
    assert (pool.paused_until, pool.quick_failures) == (0.0, 0)  # a configuration problem, not a quick failure


async def test_a_missing_image_fails_the_run_with_the_reason(world, engine_bot):
    bot = await engine_bot(image="dispatchbot-no-such-image:1")
    await dispatch(world, "/dispatch claude tidy scenario:edit-commit")
    [run] = await ended(bot)
    assert (run.state, run.reason) == ("failed", "the image `dispatchbot-no-such-image:1` is not present on the "
                                                 "Docker host: build it with `dispatchbot image build`")


async def test_a_cli_missing_from_the_image_fails_the_run_with_the_reason(world, engine_bot, agent_image):
    bot = await engine_bot(agents={"aider": {"argv": ["aider", "--message", "{prompt}"]}})
    await dispatch(world, "/dispatch aider tidy scenario:edit-commit")
    [run] = await ended(bot)
    assert (run.state, run.reason) == (
        "failed", f"the image `{agent_image}` has no `aider` CLI; use an image that has `aider` on its PATH"
    )


async def test_with_its_key_or_needing_none_the_agent_runs(world, engine_bot, monkeypatch):
    for name in AGENT_KEYS:
        monkeypatch.delenv(name)
    monkeypatch.setenv("OPENAI_API_KEY", "only-this-key")
    bot = await engine_bot(agents={"plain": {"argv": ["scripted-agent", "{prompt}"]}})
    await dispatch(world, "/dispatch codex add notes scenario:edit-commit", title="One")
    await dispatch(world, "/dispatch plain add notes scenario:no-change", title="Two")
    runs = await ended(bot, count=2)
    assert [r.state for r in runs] == ["completed", "completed"], [r.reason for r in runs]


# The default image in /healthz and the start-up log ----------------------------------------


async def healthz(bot) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.get(bot.url + "/healthz") as resp:
            return resp.status, await resp.json()


async def test_a_missing_default_image_is_logged_at_start_and_reported_by_healthz(make_bot, caplog):
    bot = await make_bot(frozen=True, image="dispatchbot-no-such-image:1")
    cluster = {"replica": bot.services.replica, "replicas": {bot.services.replica: "alive"}}
    assert await healthz(bot) == (200, {"store": "up", "docker": "up", "forge": "up", "image": "missing", **cluster})
    assert [r.getMessage() for r in caplog.records if "dispatchbot-no-such-image:1" in r.getMessage()] == [
        "the image `dispatchbot-no-such-image:1` is not present on the Docker host: build it with "
        "`dispatchbot image build`; until then every run on it fails"
    ]


async def test_a_present_default_image_is_reported_and_not_logged(make_bot, agent_image, caplog):
    bot = await make_bot(frozen=True, image=agent_image)
    cluster = {"replica": bot.services.replica, "replicas": {bot.services.replica: "alive"}}
    assert await healthz(bot) == (200, {"store": "up", "docker": "up", "forge": "up", "image": "present", **cluster})
    assert not [r for r in caplog.records if "is not present" in r.getMessage()]
