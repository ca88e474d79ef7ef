"""What the scripted model does in one conversation: tool steps, then one final message.

A conversation is stateless on the server: each CLI resends the whole history, so the number of
tool results in a request tells which step comes next. Every wire format maps a step to the tool
its CLI offers (a shell command where the CLI has no file tool).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass


@dataclass(frozen=True)
class Create:
    """Create ``path`` (relative to the workspace) holding ``content``."""

    path: str
    content: str

    def shell(self) -> str:
        return f"printf '%s' {shlex.quote(self.content)} > {shlex.quote(self.path)}"


@dataclass(frozen=True)
class Append:
    """Edit ``path`` by appending ``text``."""

    path: str
    text: str

    def shell(self) -> str:
        return f"printf '%s' {shlex.quote(self.text)} >> {shlex.quote(self.path)}"


Step = Create | Append


@dataclass(frozen=True)
class Tokens:
    """The usage one answer reports, each wire format in its vendor's own fields. ``input`` counts
    every prompt token, ``cached`` ones included; ``output`` counts ``reasoning`` ones (Anthropic's
    API reports no reasoning count: there it is sent as 0)."""

    input: int = 100
    output: int = 10
    cached: int = 0
    reasoning: int = 0


@dataclass(frozen=True)
class Script:
    steps: tuple[Step, ...]
    final: str
    tokens: tuple[Tokens, ...] = ()  # per turn (the turn after n tool results); the last one repeats
    side: Tokens = Tokens(40, 4)  # a side request's (structured output, no tools offered)

    def next(self, answered: int) -> Step | None:
        """The step after ``answered`` tool results, or None when the final message is due."""
        return self.steps[answered] if answered < len(self.steps) else None

    def usage(self, answered: int) -> Tokens:
        """What the turn after ``answered`` tool results reports."""
        return self.tokens[min(answered, len(self.tokens) - 1)] if self.tokens else Tokens()


def hello(path: str = "HELLO.md") -> Script:
    """Turn 1 creates ``path``, turn 2 edits it, turn 3 says so, naming the file."""
    return Script(
        steps=(Create(path, "# Hello\n\nWritten by the fake model.\n"), Append(path, "Edited in a second turn.\n")),
        final=f"Created and edited {path}",
    )


def say(text: str) -> Script:
    """No tool call: the first answer is the final message (a review)."""
    return Script(steps=(), final=text)


def sample(schema: dict) -> object:
    """A minimal value matching a JSON schema, for a CLI's side request asking for structured output
    (gemini's model router, claude's session title)."""
    kind = str(schema.get("type", "object")).lower()
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        properties = schema.get("properties", {})
        return {name: sample(properties[name]) for name in schema.get("required", properties)}
    return {"string": "fake", "integer": 1, "number": 1, "boolean": False, "array": []}.get(kind)
