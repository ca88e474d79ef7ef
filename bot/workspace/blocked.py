"""The BLOCKED protocol: an agent that needs a human leaves its question in BLOCKED.md and ends;
the answer waits for its next spell in ANSWER.md."""

from __future__ import annotations

from bot.workspace.files import real_dir, safe_read, safe_write
from bot.workspace.layout import ANSWER, BLOCKED, Workspace

MAX_BLOCKED_BYTES = 16 * 1024


def clear_blocked(ws: Workspace) -> None:
    """Remove a stale question before a spawn, so only a new one counts."""
    real_dir(ws.clone)
    (ws.clone / BLOCKED).unlink(missing_ok=True)


def read_blocked(ws: Workspace) -> str | None:
    """The agent's question, if it left a non-empty BLOCKED.md."""
    text = safe_read(ws.clone / BLOCKED, MAX_BLOCKED_BYTES) or ""
    return text.strip() or None


def write_answer(ws: Workspace, text: str) -> None:
    safe_write(ws.clone / ANSWER, text)
