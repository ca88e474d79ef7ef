"""Agent registry: turns a spec such as ``codex:o3`` into the argv of one agent run.

An agent's command line is a template of argv elements; ``{prompt}`` and ``{model}`` are
substituted inside each element, so the prompt is always exactly one argv element (or part of
one) and never passes through a shell.

Lookup order for ``name[:model]``: a custom agent called ``name`` (so an operator may replace a
preset, e.g. to pin its image; it then replaces every variant, ``codex:review`` included), then a
preset variant ``name:model`` (``codex:review``), then the preset ``name``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.names import validate_agent, validate_model
from bot.settings import CustomAgent, Settings

PROMPT = "{prompt}"
_PLACEHOLDER = re.compile(r"\{(prompt|model)\}")

# The container reaches the host's ollama through Docker's host-gateway alias.
OLLAMA_URL = "http://host.docker.internal:11434"
LOCAL_DEFAULT_MODEL = "devstral-24b"

_CODEX = ("codex", "exec", "--dangerously-bypass-approvals-and-sandbox")
_CODEX_LOG = ("-o", "../.meta/agent-codex.log")
_CODEX_REVIEW = (
    "Review the last 2 commits via git diff HEAD~2. Check for bugs, security issues, missing tests, "
    "naming issues. Report pass/fail with specifics. Do NOT make changes."
)
_CLAUDE_SANDBOX = (
    "SANDBOX: You are restricted to the current directory only. Do NOT use absolute paths. "
    "Do NOT navigate outside this repository."
)


class UnknownAgent(ValueError):
    """The spec names no preset and no configured agent."""

    def __init__(self, agent: str, known: list[str]) -> None:
        self.agent = agent
        self.known = known
        super().__init__(f"unknown agent {agent!r}; known agents: {', '.join(known)}")


@dataclass(frozen=True)
class Agent:
    """Everything the executor needs to start one agent; env values are read by the caller."""

    name: str
    model: str
    pool: str
    image: str
    review: bool
    env: tuple[str, ...]
    credentials: tuple[str, ...]
    template: tuple[str, ...]
    prompt_args: tuple[str, ...] = ()  # appended only when there is a prompt
    fixed_env: dict[str, str] = field(default_factory=dict, hash=False)

    def argv(self, prompt: str) -> list[str]:
        """The command line; a prompt starting with '-' is refused so it can never act as an option."""
        if prompt.startswith("-"):
            raise ValueError("a prompt must not start with '-'")
        values = {"prompt": prompt, "model": self.model}
        args = [_PLACEHOLDER.sub(lambda m: values[m[1]], element) for element in self.template]
        return args + list(self.prompt_args) if prompt else args


def _opt(flag: str, value: str) -> list[str]:
    return [flag, value] if value else []


@dataclass(frozen=True)
class _Preset:
    build: Callable[[str], list[str]]  # model -> argv template
    env: tuple[str, ...]
    review: bool = False
    prompt_args: tuple[str, ...] = ()
    fixed_env: dict[str, str] = field(default_factory=dict)
    default_model: str = ""


_OPENAI = ("OPENAI_API_KEY",)

PRESETS: dict[str, _Preset] = {
    "gemini": _Preset(
        lambda m: ["gemini", "-p", PROMPT, "--yolo", "--sandbox", *_opt("-m", m and f"gemini-2.5-{m}")],
        env=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    ),
    "codex": _Preset(lambda m: [*_CODEX, *_CODEX_LOG, *_opt("--model", m), PROMPT], env=_OPENAI),
    "codex:review": _Preset(lambda m: [*_CODEX, _CODEX_REVIEW], env=_OPENAI, review=True),
    "claude": _Preset(
        lambda m: [
            "claude", "-p", PROMPT, "--output-format", "text", "--dangerously-skip-permissions",
            "--no-session-persistence", "--append-system-prompt", _CLAUDE_SANDBOX, *_opt("--model", m),
        ],
        env=("ANTHROPIC_API_KEY",),
    ),
    "coderabbit": _Preset(
        lambda m: ["coderabbit", "review", "--plain", "--base", "HEAD~1", *_opt("--type", m)],
        env=("CODERABBIT_API_KEY",),
        review=True,
        prompt_args=("--config", "CLAUDE.md"),
    ),
    "local": _Preset(
        lambda m: [*_CODEX, "--oss", "--local-provider", "ollama", "-m", m, *_CODEX_LOG, PROMPT],
        env=_OPENAI,
        fixed_env={"OLLAMA_HOST": OLLAMA_URL, "CODEX_OSS_BASE_URL": f"{OLLAMA_URL}/v1"},
        default_model=LOCAL_DEFAULT_MODEL,
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
    return Agent(
        name=name,
        model=model,
        pool=name,
        image=settings.image,
        review=preset.review,
        env=preset.env,
        credentials=tuple(settings.credentials.get(name, ())),
        template=tuple(preset.build(model)),
        prompt_args=preset.prompt_args,
        fixed_env=dict(preset.fixed_env),
    )


def _custom(settings: Settings, name: str, model: str, custom: CustomAgent) -> Agent:
    model = _checked_model(model or custom.model or settings.default_models.get(name, ""))
    return Agent(
        name=name,
        model=model,
        pool=custom.pool or name,
        image=custom.image or settings.image,
        review=custom.review,
        env=tuple(custom.env),
        credentials=tuple(custom.credentials or settings.credentials.get(name, ())),
        template=tuple(custom.argv),
    )


def _checked_model(model: str) -> str:
    """Checked after defaults apply: a configured default ends up in argv just like user input."""
    return validate_model(model) if model else model


def stored_model(spec: str, agent: Agent) -> str:
    """The model a run keeps: the one asked for (so variants such as ``codex:review`` survive a
    retry or a restart), else the agent's default."""
    return spec.partition(":")[2] or agent.model
