"""What the agent did, read from the tool calls in its model's answers: one short, masked line per
call ("ran `pytest -q`", "edited src/x.py", "read README.md", "applied a patch to a.py").

Each CLI names its tools its own way; those below are what codex, claude, gemini and opencode
offer. A tool not known here still shows, by its name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from bot.logs import mask
from bot.runs.containers import WORKDIR

WIDTH = 80  # characters of an action line at most

SHELL = {"exec_command": "cmd", "shell": "command", "local_shell": "", "Bash": "command",
         "run_shell_command": "command", "bash": "command"}
EDIT = {"Edit", "MultiEdit", "edit", "replace", "NotebookEdit"}
WRITE = {"Write", "write_file", "write"}
READ = {"Read", "read_file", "read", "read_many_files", "view"}
SEARCH = {"Grep", "Glob", "grep", "glob", "search_file_content", "list_directory", "LS", "list", "ls"}
PATCH = {"apply_patch"}
_PATH_KEYS = ("file_path", "filePath", "path", "absolute_path", "notebook_path", "dir_path")
_PATTERN_KEYS = ("pattern", "query", "path", "dir_path")
_PATCHED = re.compile(r"^\*\*\* (?:Add|Update|Delete) File: (.+)$", re.MULTILINE)


def describe(name: str, args: Any) -> str:
    """One line for a tool call, before shortening and masking."""
    fields = args if isinstance(args, dict) else {}
    if name in SHELL:
        command = fields.get(SHELL[name]) if fields else args
        if isinstance(command, list):  # ["bash", "-lc", "pytest -q"]: the script is the last word
            command = command[-1] if command[:1] in (["bash"], ["sh"], ["zsh"]) else " ".join(map(str, command))
        return f"ran `{' '.join(str(command or '').split())}`"
    if name in PATCH:
        patch = args if isinstance(args, str) else str(fields.get("input") or fields.get("patch") or "")
        files = [_relative(f.strip()) for f in _PATCHED.findall(patch)]
        more = f" (+{len(files) - 1} more)" if len(files) > 1 else ""
        return f"applied a patch to {files[0]}{more}" if files else "applied a patch"
    path = _relative(str(next((fields[k] for k in _PATH_KEYS if fields.get(k)), "")))
    if name in EDIT:
        return f"edited {path}".rstrip()
    if name in WRITE:
        return f"wrote {path}".rstrip()
    if name in READ:
        return f"read {path}".rstrip()
    if name in SEARCH:
        pattern = next((str(fields[k]) for k in _PATTERN_KEYS if fields.get(k)), "")
        return f"searched `{pattern}`" if pattern else "searched the files"
    return f"used {name or 'a tool'}"


def lines(calls: Iterable[tuple[str, Any]], secrets: list[str]) -> list[str]:
    """The action lines of an answer's tool calls: masked, then shortened to ``WIDTH`` characters."""
    return [shorten(mask(describe(name, args), secrets)) for name, args in calls]


def shorten(text: str) -> str:
    return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"


def _relative(path: str) -> str:
    """A path inside the container's working copy, relative to it."""
    return path[len(WORKDIR) + 1:] if path.startswith(WORKDIR + "/") else path
