"""The presets with the real CLIs: the agent image runs codex, claude, gemini and opencode for real
through the bot's model gateway, against a scripted fake model server on the host's loopback, end to
end through the fake Forge.

The image is the one ``dispatchbot image build`` makes (fixture ``real_agent_image``: found by its
recipe hash, built when missing). The containers sit on the bot's closed network (``egress =
"gateway"``, the default): they reach the gateway only, and the gateway forwards to the fake model
named by the bot's own settings (``base_urls``, ``ollama_url``), with the real key in place of the
run token the container holds.
"""

from __future__ import annotations

import time

import pytest

from bot.store import ACTIVE
from tests.fakemodel import FakeModel, say
from tests.helpers import git

pytestmark = pytest.mark.docker

KEYS = {
    "OPENAI_API_KEY": "sk-fake-openai-0123456789",
    "ANTHROPIC_API_KEY": "sk-ant-fake-0123456789",
    "GEMINI_API_KEY": "fake-gemini-0123456789",
}
HELLO = "# Hello\n\nWritten by the fake model.\nEdited in a second turn.\n"
FINAL = "Created and edited HELLO.md"

# agent -> (the model API path it calls, the header carrying its key, the key)
AGENTS = {
    "codex": ("/v1/responses", "Authorization", f"Bearer {KEYS['OPENAI_API_KEY']}"),
    "claude": ("/v1/messages", "x-api-key", KEYS["ANTHROPIC_API_KEY"]),
    "gemini": ("/v1beta/models/", "x-goog-api-key", KEYS["GEMINI_API_KEY"]),
    "opencode": ("/v1/messages", "x-api-key", KEYS["ANTHROPIC_API_KEY"]),
    "local": ("/v1/responses", None, None),
}


@pytest.fixture
async def model():
    m = FakeModel()
    await m.start()
    yield m
    await m.close()
    assert m.errors == [], m.errors


@pytest.fixture
async def real_bot(make_bot, real_agent_image, model, monkeypatch):
    """The bot with the real agent image, every CLI pointed at ``model``, fake keys in its env."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)

    async def start(**overrides):
        settings = dict(
            image=real_agent_image.tag,
            base_urls={agent: model.url for agent in ("codex", "claude", "gemini", "opencode")},
            ollama_url=model.url,
            # codex offers plain function tools (exec_command) to a model it does not know
            default_models={"codex": "fake-coder", "opencode": "anthropic/claude-sonnet-4-5"},
            limits={"memory": "2g", "cpus": 2.0, "pids": 1024, "timeout": 120.0, "grace": 1.0},
        )
        return await make_bot(**(settings | overrides))

    return start


async def finished(bot, within: float = 120.0):
    """The one run, once it ended and the Forge shows its final state."""

    async def reported():
        runs = await bot.store.runs()
        if len(runs) != 1 or runs[0].state in ACTIVE or runs[0].state == "queued":
            return None
        run = runs[0]
        return run if (await bot.store.reported(run.id)).get("version") == run.version else None

    return await bot.wait_for(reported, timeout=within)


def changes(repo, base: str, branch: str) -> list[str]:
    return git(repo.path, "diff", "--name-status", base, branch).splitlines()


@pytest.mark.parametrize("agent", list(AGENTS))
async def test_a_labelled_issue_becomes_a_pull_request_holding_the_models_file(world, real_bot, model, agent):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    path, header, key = AGENTS[agent]
    bot = await real_bot()
    issue = await forge.create_issue(repo, bob, title="Say hello", body="Create HELLO.md and edit it.")
    started = time.monotonic()
    await forge.set_labels(repo, issue.number, bob, [f"dispatch:{agent}"])
    run = await finished(bot)
    assert run.state == "completed", (run.reason, run.result.log_tail)
    assert model.calls(path), [r.path for r in model.requests]
    if header:  # the key reached the model in the vendor's header, from the bot's environment, via the gateway
        assert {r.headers.get(header) for r in model.calls(path)} == {key}
    [pull] = forge.pulls(repo)
    assert pull.head_branch == run.branch
    assert changes(repo, "main", run.branch) == ["A\tHELLO.md"]
    assert forge.file_at(repo, run.branch, "HELLO.md").decode() == HELLO
    assert FINAL in pull.issue.body  # the agent's final message: codex's -o file, the others' stdout
    assert time.monotonic() - started < 60


async def test_codex_review_names_changed_lines_as_inline_comments(world, real_bot, model):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    model.script = say("src/app.py:2: print() without a trailing newline check\n\nOverall: pass, one nit.")
    bot = await real_bot(review_agent="codex:review")
    files = {"src/app.py": "import os\nprint('hi')\nprint('more')\n"}
    pull = await forge.create_pull(repo, bob, head="feature", title="Feature", files=files)
    await forge.create_comment(repo, pull.issue.number, bob, "/review")
    run = await finished(bot)
    assert run.state == "completed" and run.review, (run.reason, run.result.log_tail)
    [review] = forge.reviews(repo, pull.issue.number)
    assert [(c.path, c.line) for c in review.comments] == [("src/app.py", 2)]
    assert "trailing newline" in review.comments[0].body
    assert forge.git_log(repo, "feature")[0].sha == pull.head_sha  # a review never pushes


@pytest.mark.parametrize("agent, message", [
    ("claude", "Invalid API key"), ("codex", "401 Unauthorized"), ("gemini", "API key not valid"),
    ("opencode", "invalid x-api-key"),
])
async def test_a_model_answering_401_fails_the_run_quickly_with_the_clis_message(world, real_bot, model,
                                                                                agent, message):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    model.unauthorized = True
    bot = await real_bot()
    issue = await forge.create_issue(repo, bob, title="Say hello", body="Create HELLO.md.")
    started = time.monotonic()
    await forge.set_labels(repo, issue.number, bob, [f"dispatch:{agent}"])
    run = await finished(bot, within=60)
    assert run.state == "failed" and message in run.result.log_tail, (run.reason, run.result)
    assert time.monotonic() - started < 30
    status = [c.body for c in forge.comments(repo, issue.number) if c.poster.login == "dispatchbot"]
    assert any(message in body for body in status), status
    assert forge.pulls(repo) == []


async def test_a_credentials_dir_is_read_where_the_cli_looks_and_the_cli_still_writes_its_state(
        world, real_bot, model, tmp_path):
    """gemini writes next to its settings (``~/.gemini/projects.json``): a read-only dir would kill it."""
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    creds = tmp_path / "gemini-creds"
    creds.mkdir()
    (creds / "settings.json").write_text(
        '{"security": {"auth": {"selectedType": "gemini-api-key"}}, "model": {"name": "gemini-from-creds"}}')
    bot = await real_bot(credentials={"gemini": [str(creds)]})
    issue = await forge.create_issue(repo, bob, title="Say hello", body="Create HELLO.md.")
    await forge.set_labels(repo, issue.number, bob, ["dispatch:gemini"])
    run = await finished(bot)
    assert run.state == "completed", (run.reason, run.result.log_tail)
    assert {r.path for r in model.calls("/v1beta/")} == {"/v1beta/models/gemini-from-creds:streamGenerateContent"}
    assert forge.file_at(repo, run.branch, "HELLO.md").decode() == HELLO
    assert sorted(p.name for p in creds.iterdir()) == ["settings.json"]  # nothing written back to the host


async def test_a_model_api_the_gateway_cannot_reach_fails_the_run_quickly_with_the_reason(world, real_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await real_bot(base_urls={"claude": "http://127.0.0.1:1"})  # nothing listens there
    issue = await forge.create_issue(repo, bob, title="Say hello", body="Create HELLO.md.")
    started = time.monotonic()
    await forge.set_labels(repo, issue.number, bob, ["dispatch:claude"])
    run = await finished(bot, within=60)
    assert run.state == "failed", (run.reason, run.result)
    assert time.monotonic() - started < 30
    reason = "Model gateway: cannot reach the model API at http://127.0.0.1:1"
    status = [c.body for c in forge.comments(repo, issue.number) if c.poster.login == "dispatchbot"]
    assert any(reason in body for body in status), status
