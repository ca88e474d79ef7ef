"""Agent registry: turns a spec such as ``codex:o3`` into the argv of one agent run.

An agent's command line is a template of argv elements; ``{prompt}`` and ``{model}`` are
substituted inside each element, so the prompt is always exactly one argv element (or part of
one) and never passes through a shell.

Lookup order for ``name[:model]``: a custom agent called ``name`` (so an operator may replace a
preset, e.g. to pin its image; it then replaces every variant, ``codex:review`` included), then a
preset variant ``name:model`` (``codex:review``), then the preset ``name``.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.executor.docker import Mount
from bot.names import validate_agent, validate_model
from bot.settings import CustomAgent, Settings
from bot.store import RunRequest
from bot.workspace import layout

PROMPT = "{prompt}"
_PLACEHOLDER = re.compile(r"\{(prompt|model)\}")

# Where the agent user's settings and credentials live inside the image: the CLIs look under $HOME.
HOME = "/home/agent"
LOCAL_DEFAULT_MODEL = "devstral-24b"

_CODEX = ("codex", "exec", "--dangerously-bypass-approvals-and-sandbox")
# codex's ``-o`` file, beside the clone in ``.meta``: it receives the agent's final message.
_CODEX_LOG = ("-o", layout.from_clone(layout.LAST_MESSAGE))
_CODEX_REVIEW = (
    "Review the last 2 commits via git diff HEAD~2. Check for bugs, security issues, missing tests, "
    "naming issues. Report pass/fail with specifics. Do NOT make changes."
)
_CLAUDE_SANDBOX = (
    "SANDBOX: You are restricted to the current directory only. Do NOT use absolute paths. "
    "Do NOT navigate outside this repository."
)
# codex's provider for a configured base URL (``-c`` only then: the preset's argv stays upstream's).
_CODEX_PROVIDER = "dispatchbot"


class UnknownAgent(ValueError):
    """The spec names no preset and no configured agent."""

    def __init__(self, agent: str, known: list[str]) -> None:
        self.agent = agent
        self.known = known
        super().__init__(f"unknown agent {agent!r}; known agents: {', '.join(known)}")


@dataclass(frozen=True)
class Agent:
    """Everything the executor needs to start one agent; key values are read by the caller."""

    name: str
    model: str
    pool: str
    image: str
    review: bool
    env: tuple[str, ...]  # the bot's environment variables passed on (API keys)
    credentials: tuple[str, ...]
    template: tuple[str, ...]
    prompt_args: tuple[str, ...] = ()  # appended only when there is a prompt
    fixed_env: dict[str, str] = field(default_factory=dict, hash=False)
    renamed: dict[str, str] = field(default_factory=dict, hash=False)  # bot's name -> the CLI's name
    config_dir: str = ""  # where the CLI looks for its credentials, under HOME
    endpoint: str = ""  # the model API's base URL, when not the vendor's
    cli_endpoint: str = ""  # where the CLI sends its requests when nothing points it elsewhere (doctor)
    install: str = ""  # how to get the CLI into an image that lacks it
    prints_final_message: bool = False  # its stdout ends with its final message (the run's summary)
    vendor: str = ""  # whose API its keys are for, when their names do not say (a custom agent)
    # base URL -> (options inserted after argv[:2], environment): how the CLI is pointed at a model API
    point: Callable[[str], tuple[list[str], dict[str, str]]] | None = field(default=None, hash=False)

    def argv(self, prompt: str) -> list[str]:
        """The command line; a prompt starting with '-' is refused so it can never act as an option."""
        if prompt.startswith("-"):
            raise ValueError("a prompt must not start with '-'")
        values = {"prompt": prompt, "model": self.model}
        args = [_PLACEHOLDER.sub(lambda m: values[m[1]], element) for element in self.template]
        return args + list(self.prompt_args) if prompt else args

    def pointed_at(self, url: str) -> Agent:
        """This agent with its CLI pointed at the model API at ``url`` (the gateway)."""
        if self.point is None:
            return self
        options, env = self.point(url)
        return replace(self, template=(*self.template[:2], *options, *self.template[2:]),
                       fixed_env={**self.fixed_env, **env})

    def keys(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The bot's key variables this agent uses that ``environ`` holds, by the bot's name."""
        return {k: environ[k] for k in self.env if environ.get(k)}

    def container_env(self, keys: Mapping[str, str]) -> dict[str, str]:
        """The agent's environment: HOME, ``keys`` (bot's name -> value) under the names the CLI
        reads, and what the CLI needs to run headless. Tokens travel here, never in argv."""
        return {"HOME": HOME, **{self.renamed.get(k, k): v for k, v in keys.items()}, **self.fixed_env}

    def mounts(self) -> list[Mount]:
        """Credential dirs, read-only under HOME, as upstream mounted them: each under its own name,
        except a preset's first, whose files go where its CLI looks (``~/.codex/auth.json``, ...).

        File by file, because the CLIs write their state next to their credentials (codex and
        gemini fail on a read-only ``~/.codex`` or ``~/.gemini``), and so that a file the image
        holds there (gemini's ``settings.json``) stays unless the dir brings its own.
        """
        mounts = []
        for i, d in enumerate(map(Path, self.credentials)):
            if i == 0 and self.config_dir and d.is_dir():
                target = posixpath.join(HOME, self.config_dir)
                mounts += [Mount(f, posixpath.join(target, f.name), read_only=True)
                           for f in sorted(d.iterdir()) if f.is_file()]
            else:  # a missing dir is mounted as given: Docker names it in its refusal
                mounts.append(Mount(d, posixpath.join(HOME, d.name), read_only=True))
        return mounts


@dataclass(frozen=True)
class Cli:
    """What is known of a CLI whichever agent runs it; a custom agent may say otherwise in config."""

    endpoint: str = ""
    install: str = ""
    prints_final_message: bool = False


# By the CLI's name, argv[0]. codex writes its final message to its ``-o`` file instead.
CLIS: dict[str, Cli] = {
    "codex": Cli(endpoint="https://api.openai.com/v1"),
    "claude": Cli(endpoint="https://api.anthropic.com", prints_final_message=True),
    "gemini": Cli(endpoint="https://generativelanguage.googleapis.com", prints_final_message=True),
    "opencode": Cli(prints_final_message=True),
    "coderabbit": Cli(endpoint="https://api.coderabbit.ai", install="build the image with --coderabbit FILE"),
}


def _opt(flag: str, value: str) -> list[str]:
    return [flag, value] if value else []


@dataclass(frozen=True)
class _Preset:
    build: Callable[[str], list[str]]  # model -> argv template
    env: tuple[str, ...]
    review: bool = False
    prompt_args: tuple[str, ...] = ()
    fixed_env: dict[str, str] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)
    default_model: str = ""
    config_dir: str = ""
    default_endpoint: Callable[[Settings], str] = lambda settings: ""
    # base URL -> (options inserted after argv[:2], environment); how the CLI is pointed at it
    endpoint: Callable[[str], tuple[list[str], dict[str, str]]] | None = None  # None: cannot be (coderabbit)


def _codex_provider(url: str) -> tuple[list[str], dict[str, str]]:
    """codex ignores OPENAI_BASE_URL: a base URL needs a provider of its own (Responses API), which
    authenticates like OpenAI's (CODEX_API_KEY, or the login in ``~/.codex``)."""
    base_url = json.dumps(f"{url}/v1")  # a TOML string, quotes escaped
    provider = (f'model_providers.{_CODEX_PROVIDER}={{name="{_CODEX_PROVIDER}",base_url={base_url},'
                f'wire_api="responses",requires_openai_auth=true}}')
    return ["-c", provider, "-c", f"model_provider={_CODEX_PROVIDER}"], {}


def _opencode_config(url: str) -> tuple[list[str], dict[str, str]]:
    """opencode reads extra config from OPENCODE_CONFIG_CONTENT; the base URL serves both APIs."""
    options = {"options": {"baseURL": f"{url}/v1"}}
    return [], {"OPENCODE_CONFIG_CONTENT": json.dumps({"provider": {"anthropic": options, "openai": options}})}


# codex exec reads CODEX_API_KEY, not OPENAI_API_KEY.
_OPENAI = ("OPENAI_API_KEY",)
_CODEX_KEY = {"OPENAI_API_KEY": "CODEX_API_KEY"}

PRESETS: dict[str, _Preset] = {
    "gemini": _Preset(
        lambda m: ["gemini", "-p", PROMPT, "--yolo", "--sandbox", *_opt("-m", m and f"gemini-2.5-{m}")],
        env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        # --sandbox would start gemini's own Docker sandbox (exit 44): SANDBOX says we are in one.
        # An untrusted folder downgrades --yolo and exits 55.
        fixed_env={"SANDBOX": "dispatchbot", "GEMINI_CLI_TRUST_WORKSPACE": "true"},
        config_dir=".gemini",
        endpoint=lambda url: ([], {"GOOGLE_GEMINI_BASE_URL": url}),
    ),
    "codex": _Preset(
        lambda m: [*_CODEX, *_CODEX_LOG, *_opt("--model", m), PROMPT],
        env=_OPENAI, renamed=_CODEX_KEY, config_dir=".codex", endpoint=_codex_provider,
    ),
    "codex:review": _Preset(
        lambda m: [*_CODEX, _CODEX_REVIEW],
        env=_OPENAI, renamed=_CODEX_KEY, review=True, config_dir=".codex", endpoint=_codex_provider,
    ),
    "claude": _Preset(
        lambda m: [
            "claude", "-p", PROMPT, "--output-format", "text", "--dangerously-skip-permissions",
            "--no-session-persistence", "--append-system-prompt", _CLAUDE_SANDBOX, *_opt("--model", m),
        ],
        env=("ANTHROPIC_API_KEY",),
        fixed_env={"IS_SANDBOX": "1"},  # else --dangerously-skip-permissions is refused as root
        config_dir=".claude",
        endpoint=lambda url: ([], {"ANTHROPIC_BASE_URL": url}),
    ),
    "opencode": _Preset(
        lambda m: ["opencode", "run", "--auto", *_opt("-m", m), PROMPT],
        env=("ANTHROPIC_API_KEY", "OPENAI_API_KEY"),
        config_dir=".local/share/opencode",
        endpoint=_opencode_config,
    ),
    "coderabbit": _Preset(
        lambda m: ["coderabbit", "review", "--plain", "--base", "HEAD~1", *_opt("--type", m)],
        env=("CODERABBIT_API_KEY",),
        review=True,
        prompt_args=("--config", "CLAUDE.md"),
    ),
    "local": _Preset(
        lambda m: [*_CODEX, "--oss", "--local-provider", "ollama", "-m", m, *_CODEX_LOG, PROMPT],
        env=(),  # ollama wants no key
        default_model=LOCAL_DEFAULT_MODEL,
        config_dir=".codex",
        default_endpoint=lambda settings: settings.ollama_url,
        # codex ignores OLLAMA_HOST; its ollama is CODEX_OSS_BASE_URL.
        endpoint=lambda url: ([], {"CODEX_OSS_BASE_URL": f"{url}/v1"}),
    ),
}


def known_agents(settings: Settings) -> list[str]:
    """Every spec name a user may ask for, for help texts and errors."""
    return sorted(set(PRESETS) | set(settings.agents))


def resolve(settings: Settings, spec: str) -> Agent:
    """The agent for ``name[:model]``; ValueError on a malformed spec, UnknownAgent on an unknown name."""
    name, _, model = spec.partition(":")
    validate_agent(name)
    if name in settings.agents:
        return _custom(settings, name, model, settings.agents[name])
    if model and f"{name}:{model}" in PRESETS:
        return _preset(settings, name, "", PRESETS[f"{name}:{model}"])
    if name in PRESETS:
        return _preset(settings, name, model, PRESETS[name])
    raise UnknownAgent(name, known_agents(settings))


def _preset(settings: Settings, name: str, model: str, preset: _Preset) -> Agent:
    model = _checked_model(model or settings.default_models.get(name) or preset.default_model)
    endpoint = (settings.base_urls.get(name) or preset.default_endpoint(settings)).rstrip("/")
    template = preset.build(model)
    cli = CLIS.get(template[0], Cli())
    return Agent(
        name=name,
        model=model,
        pool=name,
        image=settings.image,
        review=preset.review,
        env=preset.env,
        credentials=tuple(settings.credentials.get(name, ())),
        template=tuple(template),
        prompt_args=preset.prompt_args,
        fixed_env=dict(preset.fixed_env),
        renamed=dict(preset.renamed),
        config_dir=preset.config_dir,
        endpoint=endpoint,
        cli_endpoint=cli.endpoint,
        install=cli.install,
        prints_final_message=cli.prints_final_message,
        point=preset.endpoint,
    )


def _custom(settings: Settings, name: str, model: str, custom: CustomAgent) -> Agent:
    model = _checked_model(model or custom.model or settings.default_models.get(name, ""))
    cli = CLIS.get(custom.argv[0] if custom.argv else "", Cli())
    variable = custom.base_url_env
    return Agent(
        name=name,
        model=model,
        pool=custom.pool or name,
        image=custom.image or settings.image,
        review=custom.review,
        env=tuple(custom.env),
        credentials=tuple(custom.credentials or settings.credentials.get(name, ())),
        template=tuple(custom.argv),
        cli_endpoint=custom.cli_endpoint or cli.endpoint,
        install=custom.install or cli.install,
        prints_final_message=cli.prints_final_message if custom.prints_final_message is None else custom.prints_final_message,
        endpoint=settings.base_urls.get(name, "").rstrip("/"),
        vendor=custom.vendor,
        point=(lambda url: ([], {variable: url})) if variable else None,
    )


def _checked_model(model: str) -> str:
    """Checked after defaults apply: a configured default ends up in argv just like user input."""
    return validate_model(model) if model else model


def run_request(
    spec: str,
    agent: Agent,
    *,
    owner: str,
    repo: str,
    number: int,
    is_pull: bool,
    task: str,
    trigger: str,
    requested_by: str,
    review: bool = False,
    comment_id: int | None = None,
    options: dict[str, Any] | None = None,
) -> RunRequest:
    """The request for a run of ``agent``, resolved from ``spec``: its name, the model it keeps, its
    pool, and a review when asked for or when the agent only reviews."""
    return RunRequest(
        owner=owner, repo=repo, number=number, is_pull=is_pull, agent=agent.name, model=stored_model(spec, agent),
        pool=agent.pool, review=review or agent.review, task=task, trigger=trigger, requested_by=requested_by,
        comment_id=comment_id, options=options or {},
    )


def stored_model(spec: str, agent: Agent) -> str:
    """The model a run keeps: the one asked for (so variants such as ``codex:review`` survive a
    retry or a restart), else the agent's default."""
    return spec.partition(":")[2] or agent.model
