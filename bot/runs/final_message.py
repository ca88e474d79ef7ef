"""The run's summary: the agent's final message, shown in the PR body and the status comment.

codex writes its final message to its ``-o`` file (``--output-last-message``, in ``.meta/``); claude
(``-p --output-format text``), gemini (``-p``) and opencode (``run``) print theirs as their last output
on stdout. The container's own output is kept apart (``layout.CONTAINER_LOG``) so the two never mix. Everything here reads
files the agent stage (``pipeline.agent``) already masked; the summary is bounded because it is quoted on the Forge.
"""

from __future__ import annotations

from bot import workspace as wsmod
from bot.runs.agents import Agent
from bot.workspace import Workspace
from bot.workspace.layout import LAST_MESSAGE, STDOUT_LOG
MAX_CHARS = 3000
CUT = "…"


def clear(ws: Workspace) -> None:
    """Remove a final message an earlier attempt left, so only this attempt's counts (removed, not
    emptied: a file the host writes would be root's, and the agent could not write it again)."""
    path = ws.meta / LAST_MESSAGE
    if wsmod.safe_read(path, 0) is not None:  # a regular file in a real .meta, never a planted link
        path.unlink()


def read(ws: Workspace, agent: Agent, log_bytes: int) -> str:
    """The final message ``agent`` left: its ``-o`` file, else the end of its stdout (at most
    ``log_bytes``) where that is the message; empty when there is none. At most ``MAX_CHARS``."""
    written = (wsmod.safe_read(ws.meta / LAST_MESSAGE, 4 * MAX_CHARS) or "").strip()
    if written:
        return written if len(written) <= MAX_CHARS else written[:MAX_CHARS].rstrip() + CUT
    if not agent.prints_final_message:
        return ""
    printed = (wsmod.safe_read(ws.meta / STDOUT_LOG, log_bytes) or "").strip()
    return printed if len(printed) <= MAX_CHARS else CUT + printed[-MAX_CHARS:].lstrip()
