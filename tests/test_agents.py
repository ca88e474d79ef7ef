import json
from pathlib import Path

import pytest

from bot.runs.agents import UnknownAgent, known_agents, resolve
from bot.executor.docker import Mount
from bot.settings import CustomAgent, Settings

P = "fix the flaky test"
YOLO = ["codex", "exec", "--dangerously-bypass-approvals-and-sandbox"]
CLAUDE_SANDBOX = (
    "SANDBOX: You are restricted to the current directory only. Do NOT use absolute paths. "
    "Do NOT navigate outside this repository."
)


def settings(**kwargs) -> Settings:
    return Settings(_env_file=None, **kwargs)


@pytest.fixture
def s() -> Settings:
    return settings()


@pytest.mark.parametrize(
    "spec, argv",
    [
        ("gemini", ["gemini", "-p", P, "--yolo", "--sandbox"]),
        ("gemini:flash", ["gemini", "-p", P, "--yolo", "--sandbox", "-m", "gemini-2.5-flash"]),
        ("codex", [*YOLO, "-o", "../.meta/agent-codex.log", P]),
        ("codex:o3", [*YOLO, "-o", "../.meta/agent-codex.log", "--model", "o3", P]),
        (
            "codex:review",
            [
                *YOLO,
                "Review the last 2 commits via git diff HEAD~2. Check for bugs, security issues, missing tests, "
                "naming issues. Report pass/fail with specifics. Do NOT make changes.",
            ],
        ),
        (
            "claude",
            ["claude", "-p", P, "--output-format", "text", "--dangerously-skip-permissions",
             "--no-session-persistence", "--append-system-prompt", CLAUDE_SANDBOX],
        ),
        (
            "claude:opus",
            ["claude", "-p", P, "--output-format", "text", "--dangerously-skip-permissions",
             "--no-session-persistence", "--append-system-prompt", CLAUDE_SANDBOX, "--model", "opus"],
        ),
        ("opencode", ["opencode", "run", "--auto", P]),
        ("opencode:openai/gpt-5", ["opencode", "run", "--auto", "-m", "openai/gpt-5", P]),
        ("coderabbit", ["coderabbit", "review", "--plain", "--base", "HEAD~1", "--config", "CLAUDE.md"]),
        (
            "coderabbit:committed",
            ["coderabbit", "review", "--plain", "--base", "HEAD~1", "--type", "committed", "--config", "CLAUDE.md"],
        ),
        (
            "local",
            [*YOLO, "--oss", "--local-provider", "ollama", "-m", "devstral-24b", "-o", "../.meta/agent-codex.log", P],
        ),
        (
            "local:qwen3:8b",
            [*YOLO, "--oss", "--local-provider", "ollama", "-m", "qwen3:8b", "-o", "../.meta/agent-codex.log", P],
        ),
    ],
)
def test_preset_argv_is_the_upstream_command_line(s, spec, argv):
    assert resolve(s, spec).argv(P) == argv


def test_coderabbit_without_prompt_has_no_config(s):
    assert resolve(s, "coderabbit").argv("") == ["coderabbit", "review", "--plain", "--base", "HEAD~1"]


def test_prompt_stays_one_element_whatever_it_holds(s):
    nasty = 'x"; rm -rf / #\n$(touch pwned) `id` {model} {prompt}'
    argv = resolve(s, "claude:opus").argv(nasty)
    assert argv[2] == nasty and argv.count(nasty) == 1


def test_prompt_cannot_become_an_option(s):
    with pytest.raises(ValueError):
        resolve(s, "codex").argv("--help")


@pytest.mark.parametrize(
    "spec, review, pool, env",
    [
        ("gemini:flash", False, "gemini", ("GEMINI_API_KEY", "GOOGLE_API_KEY")),
        ("codex", False, "codex", ("OPENAI_API_KEY",)),
        ("codex:review", True, "codex", ("OPENAI_API_KEY",)),
        ("claude:opus", False, "claude", ("ANTHROPIC_API_KEY",)),
        ("coderabbit", True, "coderabbit", ("CODERABBIT_API_KEY",)),
        ("opencode", False, "opencode", ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")),
        ("local:qwen3", False, "local", ()),
    ],
)
def test_preset_properties(s, spec, review, pool, env):
    agent = resolve(s, spec)
    assert (agent.review, agent.pool, agent.env, agent.image) == (review, pool, env, s.image)


ENVIRON = {
    "OPENAI_API_KEY": "sk-openai", "ANTHROPIC_API_KEY": "sk-ant", "GEMINI_API_KEY": "g-key",
    "CODERABBIT_API_KEY": "cr-key", "FORGE_TOKEN": "never-passed", "PATH": "/host/bin",
}


@pytest.mark.parametrize(
    "spec, env",
    [
        # codex exec sends CODEX_API_KEY, never OPENAI_API_KEY
        ("codex", {"CODEX_API_KEY": "sk-openai"}),
        ("codex:review", {"CODEX_API_KEY": "sk-openai"}),
        # --dangerously-skip-permissions is refused as root without IS_SANDBOX
        ("claude", {"ANTHROPIC_API_KEY": "sk-ant", "IS_SANDBOX": "1"}),
        # --sandbox would start Docker (exit 44); an untrusted folder exits 55
        ("gemini", {"GEMINI_API_KEY": "g-key", "SANDBOX": "dispatchbot", "GEMINI_CLI_TRUST_WORKSPACE": "true"}),
        ("opencode", {"ANTHROPIC_API_KEY": "sk-ant", "OPENAI_API_KEY": "sk-openai"}),
        ("local", {}),  # ollama needs no key
        ("coderabbit", {"CODERABBIT_API_KEY": "cr-key"}),
    ],
)
def test_container_env_is_what_each_cli_reads(s, spec, env):
    """Under the names each CLI reads: the gateway puts run tokens there, never these values."""
    agent = resolve(s, spec)
    assert agent.container_env(agent.keys(ENVIRON)) == {"HOME": "/home/agent", **env}


def test_keys_missing_from_the_environment_are_left_out(s):
    agent = resolve(s, "gemini")
    assert agent.container_env(agent.keys({"GOOGLE_API_KEY": "g", "GEMINI_API_KEY": ""})) == {
        "HOME": "/home/agent", "GOOGLE_API_KEY": "g", "SANDBOX": "dispatchbot", "GEMINI_CLI_TRUST_WORKSPACE": "true",
    }


def test_base_urls_are_the_upstreams_and_each_cli_is_pointed_by_its_own_mechanism():
    """``base_urls`` name where the gateway forwards; the CLI itself is pointed at the gateway."""
    url, gateway = "http://models.example:8080", "http://172.30.0.1:8081/x/token"
    s = settings(base_urls={a: url + "/" for a in ("codex", "claude", "gemini", "opencode")},
                 ollama_url="http://gpu-box:11434")
    assert [resolve(s, a).endpoint for a in ("claude", "local")] == [url, "http://gpu-box:11434"]

    def pointed(spec):
        return resolve(s, spec).pointed_at(gateway)

    assert pointed("claude").container_env({})["ANTHROPIC_BASE_URL"] == gateway
    assert pointed("gemini").container_env({})["GOOGLE_GEMINI_BASE_URL"] == gateway
    assert pointed("local").container_env({})["CODEX_OSS_BASE_URL"] == gateway + "/v1"
    config = json.loads(pointed("opencode").container_env({})["OPENCODE_CONFIG_CONTENT"])
    assert config == {"provider": {p: {"options": {"baseURL": gateway + "/v1"}} for p in ("anthropic", "openai")}}
    provider = (
        f'model_providers.dispatchbot={{name="dispatchbot",base_url="{gateway}/v1",'
        'wire_api="responses",requires_openai_auth=true}'
    )
    flags = ["-c", provider, "-c", "model_provider=dispatchbot"]
    assert pointed("codex").argv(P) == ["codex", "exec", *flags, YOLO[2], "-o", "../.meta/agent-codex.log", P]
    assert pointed("codex:review").argv("")[:6] == ["codex", "exec", *flags]
    for spec in ("claude", "gemini", "opencode"):  # env, never argv
        assert not any(gateway in a for a in pointed(spec).argv(P))
    assert pointed("coderabbit") == resolve(s, "coderabbit")  # a CLI with no base URL to set


def test_without_base_urls_no_cli_is_redirected(s):
    for spec in ("codex", "claude", "gemini", "opencode"):
        agent = resolve(s, spec)
        assert agent.endpoint == ""
        assert not {"ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL", "OPENCODE_CONFIG_CONTENT"} & set(
            agent.container_env(agent.keys(ENVIRON)))
    assert resolve(s, "local").endpoint == "http://127.0.0.1:11434"


@pytest.mark.parametrize(
    "spec, target",
    [("codex", ".codex"), ("codex:review", ".codex"), ("claude", ".claude"), ("gemini", ".gemini"),
     ("opencode", ".local/share/opencode"), ("local", ".codex")],
)
def test_credentials_mount_read_only_file_by_file_where_the_cli_looks(tmp_path, spec, target):
    mine, extra = tmp_path / "mine", tmp_path / ".extra"
    (mine / "sessions").mkdir(parents=True)  # the CLI's state: not mounted, the CLI keeps its own
    (mine / "auth.json").write_text("{}")
    (mine / "settings.json").write_text("{}")
    extra.mkdir()
    s = settings(credentials={spec.partition(":")[0]: [str(mine), str(extra)]})
    assert resolve(s, spec).mounts() == [
        Mount(mine / "auth.json", f"/home/agent/{target}/auth.json", read_only=True),
        Mount(mine / "settings.json", f"/home/agent/{target}/settings.json", read_only=True),
        Mount(extra, "/home/agent/.extra", read_only=True),
    ]


def test_a_missing_credentials_dir_is_mounted_as_given_for_docker_to_refuse(tmp_path):
    s = settings(credentials={"claude": [str(tmp_path / "gone")]})
    assert resolve(s, "claude").mounts() == [Mount(tmp_path / "gone", "/home/agent/gone", read_only=True)]


def test_defaults_and_credentials_come_from_settings():
    s = settings(default_models={"local": "qwen3", "codex": "o3"}, credentials={"codex": ["/root/.codex"]}, image="img:1")
    codex = resolve(s, "codex")
    assert "--model" in codex.argv(P) and codex.model == "o3"
    assert codex.credentials == ("/root/.codex",) and codex.image == "img:1"
    assert resolve(s, "local").model == "qwen3"
    assert resolve(s, "codex:gpt-5").model == "gpt-5"


def test_custom_agent_substitutes_per_element():
    custom = CustomAgent(
        image="aider:1", argv=["aider", "--model", "{model}", "--message={prompt}", "{prompt}"],
        model="sonnet", env=["ANTHROPIC_API_KEY"], credentials=["/etc/aider"], pool="claude", review=False,
    )
    s = settings(agents={"aider": custom})
    agent = resolve(s, "aider")
    assert agent.argv("a b {model}") == ["aider", "--model", "sonnet", "--message=a b {model}", "a b {model}"]
    assert (agent.image, agent.pool, agent.env, agent.credentials) == ("aider:1", "claude", ("ANTHROPIC_API_KEY",), ("/etc/aider",))
    assert resolve(s, "aider:haiku").argv("p")[2] == "haiku"


def test_custom_agent_defaults():
    s = settings(agents={"mine": CustomAgent(argv=["mine", "{prompt}"])}, credentials={"mine": ["/c"]})
    agent = resolve(s, "mine")
    assert (agent.image, agent.pool, agent.review, agent.credentials) == (s.image, "mine", False, ("/c",))
    assert agent.mounts() == [Mount(Path("/c"), "/home/agent/c", read_only=True)]
    assert agent.keys({"OPENAI_API_KEY": "k"}) == {}


def test_what_is_known_of_a_cli_follows_it_and_a_custom_agent_may_say_otherwise():
    s = settings(agents={
        "myclaude": CustomAgent(argv=["claude", "-p", "{prompt}"]),
        "mine": CustomAgent(argv=["mine", "{prompt}"]),
        "told": CustomAgent(argv=["claude", "{prompt}"], cli_endpoint="https://llm.example", install="ask ops",
                            prints_final_message=False),
    })
    facts = {name: (a.cli_endpoint, a.install, a.prints_final_message) for name in
             ("claude", "codex", "local", "coderabbit", "myclaude", "mine", "told") if (a := resolve(s, name))}
    assert facts == {
        "claude": ("https://api.anthropic.com", "", True),
        "codex": ("https://api.openai.com/v1", "", False),  # its final message goes to its -o file
        "local": ("https://api.openai.com/v1", "", False),  # codex too; doctor shows its ollama_url instead
        "coderabbit": ("https://api.coderabbit.ai", "build the image with --coderabbit FILE", False),
        "myclaude": ("https://api.anthropic.com", "", True),  # by its CLI, argv[0]
        "mine": ("", "", False),
        "told": ("https://llm.example", "ask ops", False),
    }


def test_custom_agent_shadows_preset():
    s = settings(agents={"codex": CustomAgent(image="pinned", argv=["codex", "exec", "{prompt}"])})
    assert resolve(s, "codex").argv(P) == ["codex", "exec", P]
    assert resolve(s, "codex:review").image == "pinned"


def test_unknown_agent_lists_known_ones():
    s = settings(agents={"mine": CustomAgent(argv=["mine"])})
    with pytest.raises(UnknownAgent) as err:
        resolve(s, "gpt")
    assert err.value.agent == "gpt"
    assert err.value.known == known_agents(s)
    assert "claude, coderabbit, codex, codex:review, gemini, local, mine, opencode" in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "spec", ["", ":o3", "-rf", "co dex", "codex/x", "../codex", "a" * 41, "codex:-o", "codex:a b",
             "codex:$(id)", "codex:../../x;y", "codex:" + "m" * 101, "codex:\n", "claude:x\x00"],
)
def test_malformed_specs_are_refused(s, spec):
    with pytest.raises(ValueError, match="invalid") as err:
        resolve(s, spec)
    assert not isinstance(err.value, UnknownAgent)


def test_configured_default_model_is_validated_too():
    with pytest.raises(ValueError, match="invalid model"):
        resolve(settings(default_models={"codex": "--yolo"}), "codex")


def test_a_custom_agent_may_not_ask_for_the_bots_own_settings():
    with pytest.raises(ValueError, match="DISPATCHBOT_FORGE_TOKEN: the bot's own settings never reach"):
        settings(agents={"mine": {"argv": ["mine", "{prompt}"], "env": ["MY_KEY", "DISPATCHBOT_FORGE_TOKEN"]}})
    assert settings(agents={"mine": {"argv": ["mine"], "env": ["MY_KEY"]}}).agents["mine"].env == ["MY_KEY"]
