"""The model APIs the gateway forwards to: where each is, which header carries its key, which of its
calls the gateway forwards (``ROUTES``), and which hosts a CLI logged in with its own credentials (an
OAuth subscription) needs to reach."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.gateway.observer import Api

if TYPE_CHECKING:
    from bot.runs.agents import Agent


@dataclass(frozen=True)
class Vendor:
    name: str
    upstream: str  # the API's root URL, without /v1
    header: str  # the request header carrying the key ("" for an API without one)
    prefix: str = ""  # what precedes the key in that header ("Bearer ")
    hosts: tuple[str, ...] = ()  # what a CLI with a login of its own talks to


VENDORS: dict[str, Vendor] = {
    "anthropic": Vendor("anthropic", "https://api.anthropic.com", "x-api-key",
                        hosts=("api.anthropic.com", "console.anthropic.com", "claude.ai", "statsig.anthropic.com")),
    "openai": Vendor("openai", "https://api.openai.com", "authorization", "Bearer ",
                     hosts=("api.openai.com", "auth.openai.com", "chatgpt.com")),
    "gemini": Vendor("gemini", "https://generativelanguage.googleapis.com", "x-goog-api-key",
                     hosts=("generativelanguage.googleapis.com", "cloudcode-pa.googleapis.com",
                            "oauth2.googleapis.com", "accounts.google.com")),
    "ollama": Vendor("ollama", "", ""),
    # coderabbit's CLI takes no base URL: its key stays inside its container, which reaches these only.
    "coderabbit": Vendor("coderabbit", "https://api.coderabbit.ai", "", hosts=("api.coderabbit.ai", "app.coderabbit.ai")),
}

# The bot's environment variable holding a key -> the vendor it is for.
KEY_VENDORS: dict[str, str] = {
    "ANTHROPIC_API_KEY": "anthropic",
    "OPENAI_API_KEY": "openai",
    "GEMINI_API_KEY": "gemini",
    "GOOGLE_API_KEY": "gemini",
    "CODERABBIT_API_KEY": "coderabbit",
}


def key_vendors(agent: Agent) -> dict[str, str]:
    """The agent's key variables -> the vendor each is for: its declared vendor, else by the key's name."""
    return {k: agent.vendor or KEY_VENDORS[k] for k in agent.env if agent.vendor or k in KEY_VENDORS}

# Every header that may carry a key or a login, removed before a call goes upstream.
AUTH_HEADERS = ("authorization", "x-api-key", "x-goog-api-key")


@dataclass(frozen=True)
class Route:
    """One call of a model API the gateway forwards: its method, its path (a full match), and how its
    answer is read (``Api.OTHER``: not a model call, nothing to meter: a model list, a token count)."""

    method: str
    path: re.Pattern[str]
    api: Api = Api.OTHER


def _route(method: str, path: str, api: Api = Api.OTHER) -> Route:
    return Route(method, re.compile(path), api)


# The version may sit in a custom ``base_urls`` entry instead of the CLI's path; a model's name in a
# path has no slash and is no dot segment (nor a colon, but for ollama's ``name:tag``).
_V1 = "(?:/v1)?"
_MODEL = "[A-Za-z0-9][A-Za-z0-9._-]*"
_TAGGED = "[A-Za-z0-9][A-Za-z0-9._:-]*"
_GEMINI = f"/v1(?:beta)?/models/{_MODEL}"

# What each vendor's API is used for behind the gateway: the calls the CLIs make (model calls, token
# counts, model lists, probes), and nothing else. A run's token carries the real key, and the rest of
# a vendor's API is reached with the same key: batches (thousands of calls that go on after the run,
# outside its budget), embeddings and images (never metered), stored completions, responses and files
# (the whole account's: other runs' prompts, with other repositories' code), uploads, fine-tuning.
# ollama has no key, but no run may pull, create or delete the models of the bot's ollama.
ROUTES: dict[str, tuple[Route, ...]] = {
    "anthropic": (
        _route("POST", f"{_V1}/messages", Api.ANTHROPIC_MESSAGES),  # claude, opencode
        _route("POST", f"{_V1}/messages/count_tokens"),
        _route("GET", f"{_V1}/models(?:/{_MODEL})?"),
        _route("HEAD", "/api/hello"),  # claude's check that its base URL answers
    ),
    "openai": (
        _route("POST", f"{_V1}/responses", Api.OPENAI_RESPONSES),  # codex, opencode
        _route("POST", f"{_V1}/responses/compact", Api.OPENAI_RESPONSES),  # codex compacting its history
        _route("POST", f"{_V1}/chat/completions", Api.CHAT_COMPLETIONS),  # opencode, custom agents
        _route("GET", f"{_V1}/models(?:/{_MODEL})?"),
    ),
    "gemini": (
        _route("POST", f"{_GEMINI}:(?:streamGenerateContent|generateContent)", Api.GEMINI),
        _route("POST", f"{_GEMINI}:countTokens"),
        _route("GET", f"/v1(?:beta)?/models(?:/{_MODEL})?"),
    ),
    "ollama": (  # local: codex --oss (its probes, then the Responses API), and ollama's own API
        _route("POST", "/api/(?:chat|generate)", Api.OLLAMA),
        _route("POST", "/api/show"),
        _route("GET", "/api/(?:tags|version)"),
        _route("POST", "/v1/responses", Api.OPENAI_RESPONSES),
        _route("POST", "/v1/chat/completions", Api.CHAT_COMPLETIONS),
        _route("GET", f"/v1/models(?:/{_TAGGED})?"),
    ),
}


def route_of(vendor: str, method: str, path: str) -> Route | None:
    """The route of ``vendor``'s API a call is (``path`` as forwarded, query excluded), None for one
    the gateway refuses."""
    return next((r for r in ROUTES.get(vendor, ()) if r.method == method and r.path.fullmatch(path)), None)


def vendor_of_header(headers: dict[str, str] | object, candidates: tuple[str, ...]) -> str | None:
    """Of an agent's vendors, the one whose key header the CLI sent (opencode talks to two)."""
    for name in candidates:
        header = VENDORS[name].header
        if header and header in headers:  # type: ignore[operator]
            return name
    return candidates[0] if candidates else None
