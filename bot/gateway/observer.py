"""What the gateway tells others about every model call it forwards: the seam for usage and budgets.

The gateway calls ``Observer.admit`` before forwarding a call (a refusal reason stops it: the CLI is
answered 400 with the reason, which no CLI retries), ``Observer.request`` for the body to send, then feeds the call's ``Meter`` every upstream
chunk as it passes (never buffered), and ``finish`` once the answer ended, whether complete or cut.
The default observer does nothing; the wiring plugs in another one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Api(StrEnum):
    """The wire format of a model call, so a meter knows how to read its answer."""

    OPENAI_RESPONSES = "openai-responses"  # POST /v1/responses (codex)
    CHAT_COMPLETIONS = "chat-completions"  # POST /v1/chat/completions (opencode's openai, ollama's /v1)
    ANTHROPIC_MESSAGES = "anthropic-messages"  # POST /v1/messages (claude, opencode)
    GEMINI = "gemini"  # POST /v1beta/models/<model>:(stream)generateContent
    OLLAMA = "ollama"  # ollama's own /api/*
    OTHER = "other"  # what else a CLI asks of its model API (model lists, token counts, probes)


@dataclass(frozen=True)
class Grant:
    """Who may call: one run's agent, for as long as the run is active. Never holds the key."""

    run_id: int
    agent: str
    model: str
    repo: str  # owner/name
    pool: str


@dataclass(frozen=True)
class Call:
    """One model call as the gateway forwards it."""

    grant: Grant
    api: Api
    method: str
    path: str  # as the CLI asked, query string excluded
    status: int  # the upstream's answer status


class Meter(Protocol):
    """Sees one call's answer as it streams past."""

    def feed(self, chunk: bytes) -> None: ...

    def finish(self, call: Call, complete: bool) -> None:
        """The answer ended; ``complete`` is False when the upstream or the client broke it off."""


class Observer(Protocol):
    async def admit(self, grant: Grant, api: Api, body: bytes) -> str | None:
        """None to forward the call, or the reason it is refused (e.g. "budget of 5.00 USD spent")."""

    def request(self, api: Api, body: bytes) -> bytes:
        """The body to forward for an admitted call (e.g. one asking a stream to report its usage)."""

    def meter(self, grant: Grant, api: Api, body: bytes) -> Meter:
        """A meter for a call that was admitted and is about to be forwarded."""


class _NoMeter:
    def feed(self, chunk: bytes) -> None:
        pass

    def finish(self, call: Call, complete: bool) -> None:
        pass


class NoObserver:
    """Admits every call and measures nothing."""

    async def admit(self, grant: Grant, api: Api, body: bytes) -> str | None:
        return None

    def request(self, api: Api, body: bytes) -> bytes:
        return body

    def meter(self, grant: Grant, api: Api, body: bytes) -> Meter:
        return _NoMeter()
