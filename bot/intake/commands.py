"""Parse slash commands out of a comment: ``/dispatch claude:opus fix the flaky test``.

A command is a line that starts with ``/`` followed by one of our names. Lines inside fenced
code blocks are not commands. Text after ``/dispatch`` and ``/answer`` runs to the next command
line and is kept verbatim: it is data, never interpreted. Parsing never raises; a malformed
command comes back with ``error`` set so the reply can say what would work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.names import AGENT_NAME, MODEL_NAME
from bot.report.markup import plain

NAMES = ("dispatch", "review", "cancel", "retry", "status", "answer", "help")
COMMAND_RE = re.compile(r"^[ \t]{0,3}/([A-Za-z][A-Za-z0-9_-]*)(?=\s|$)(.*)$")
FENCE_RE = re.compile(r"^[ \t]{0,3}(```|~~~)")

USAGE = {
    "dispatch": "/dispatch <agent>[:<model>] [task]",
    "review": "/review [<agent>[:<model>]]",
    "cancel": "/cancel",
    "retry": "/retry",
    "status": "/status",
    "answer": "/answer <text>",
    "help": "/help",
}


@dataclass(frozen=True)
class Command:
    name: str
    line: int
    agent: str = ""
    model: str = ""
    text: str = ""
    error: str = ""

    @property
    def agent_spec(self) -> str:
        return f"{self.agent}:{self.model}" if self.model else self.agent


def parse(body: str, limit: int | None = None) -> list[Command]:
    """Every command of ours in ``body``, in order; the first ``limit`` ones, if given (a hostile
    comment may hold hundreds of thousands)."""
    lines = body.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    found: list[tuple[int, str, str]] = []
    fenced = False
    for number, line in enumerate(lines):
        if FENCE_RE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else COMMAND_RE.match(line)
        if match and match.group(1).lower() in NAMES:
            found.append((number, match.group(1).lower(), match.group(2)))
            if limit is not None and len(found) > limit:  # one more: where the last one's text ends
                break
    commands = []
    for i, (number, name, rest) in enumerate(found[:limit]):
        end = found[i + 1][0] if i + 1 < len(found) else len(lines)
        commands.append(_parse_one(name, number, rest, lines[number + 1 : end]))
    return commands


def _parse_one(name: str, number: int, rest: str, following: list[str]) -> Command:
    def error(reason: str) -> Command:
        return Command(name=name, line=number, error=f"{reason}; usage: `{USAGE[name]}`")

    words = rest.split(None, 1)
    if name in ("cancel", "retry", "status", "help"):
        return error(f"/{name} takes no arguments") if words else Command(name=name, line=number)
    if name == "answer":
        text = "\n".join([rest.strip(), *following]).strip()
        return Command(name=name, line=number, text=text) if text else error("/answer needs the answer text")
    if not words:
        if name == "review":
            return Command(name=name, line=number)
        return error("/dispatch needs an agent")
    agent, _, model = words[0].partition(":")
    if not AGENT_NAME.fullmatch(agent):  # the user's word quoted back: plain, it cannot close a code span
        return error(f"{plain(words[0][:40])} is not an agent name")
    if ":" in words[0] and not MODEL_NAME.fullmatch(model):
        return error(f"{plain(words[0][:80])} has no valid model after the colon")
    text = "\n".join([words[1].strip() if len(words) > 1 else "", *following]).strip()
    if name == "review" and text:
        return error("/review takes only an agent")
    return Command(name=name, line=number, agent=agent.lower(), model=model, text=text)
