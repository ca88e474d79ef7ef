"""The model APIs the gateway forwards to: where each is, which header carries its key, and which
hosts a CLI logged in with its own credentials (an OAuth subscription) needs to reach."""

from __future__ import annotations

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


def api_of(path: str) -> Api:
    """The wire format of a call, from its path (``/v1/responses``, ``/v1beta/models/m:generateContent``)."""
    if path.endswith("/responses"):
        return Api.OPENAI_RESPONSES
    if path.endswith("/chat/completions"):
        return Api.CHAT_COMPLETIONS
    if path.endswith("/messages"):
        return Api.ANTHROPIC_MESSAGES
    if "GenerateContent" in path or path.endswith(":generateContent"):
        return Api.GEMINI
    if path.startswith("/api/"):
        return Api.OLLAMA
    return Api.OTHER


def vendor_of_header(headers: dict[str, str] | object, candidates: tuple[str, ...]) -> str | None:
    """Of an agent's vendors, the one whose key header the CLI sent (opencode talks to two)."""
    for name in candidates:
        header = VENDORS[name].header
        if header and header in headers:  # type: ignore[operator]
            return name
    return candidates[0] if candidates else None
