"""Which tool call performs a script step, given the tools a CLI offered in its request.

Each CLI names its tools its own way (REAL-CLIS.md lists what each one offered): the first family
whose marker tool is on offer decides. Files are created with the CLI's file tool (absolute paths,
as those tools demand) and edited through its shell tool.
"""

from __future__ import annotations

import posixpath
from typing import Any

from .script import Append, Create, Step

# marker tool -> (file tool and its argument names, shell tool and its command argument)
_FAMILIES: list[tuple[str, tuple[str, str, str] | None, tuple[str, str]]] = [
    ("Write", ("Write", "file_path", "content"), ("Bash", "command")),  # claude
    ("write_file", ("write_file", "file_path", "content"), ("run_shell_command", "command")),  # gemini
    ("write", ("write", "filePath", "content"), ("bash", "command")),  # opencode
    ("exec_command", None, ("exec_command", "cmd")),  # codex: a shell only
]


class NoUsableTool(Exception):
    """The request offered none of the tools the fake model knows how to call."""


def call_for(step: Step, offered: set[str], workdir: str) -> tuple[str, dict[str, Any]]:
    """(tool name, arguments) performing ``step`` with one of the ``offered`` tools."""
    for marker, file_tool, (shell, command) in _FAMILIES:
        if marker not in offered:
            continue
        if isinstance(step, Create) and file_tool:
            name, path_arg, content_arg = file_tool
            return name, {path_arg: posixpath.join(workdir, step.path), content_arg: step.content}
        assert isinstance(step, Create | Append)
        args = {command: step.shell()}
        if shell != "exec_command":
            args["description"] = "edit the file"
        return shell, args
    raise NoUsableTool(f"none of the known tools was offered: {sorted(offered)}")
