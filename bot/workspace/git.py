"""Running git host-side: no shell, no prompts, no host config, and a repository named explicitly."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.workspace.layout import Workspace

GIT_TIMEOUT = 120.0
NETWORK_TIMEOUT = 900.0
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class GitError(RuntimeError):
    """A git command failed or timed out; the message carries git's own explanation."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: bytes) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        detail = stderr.decode("utf-8", "replace").strip()[-800:]
        status = "timed out" if returncode is None else f"failed with exit {returncode}"
        super().__init__(f"`{shlex.join(argv)[:300]}` {status}: {detail}")


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Never prompt, ignore the host user's ~/.gitconfig and any replace refs, English messages."""
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_NO_REPLACE_OBJECTS": "1",
        "LC_ALL": "C",
        **(extra or {}),
    }


def clone_argv(clone: Path, *args: str) -> list[str]:
    """git in a clone the agent touched: explicit repository and work tree (no discovery, no
    ownership check), no hooks, no fsmonitor, no commit-graph file the agent could have forged."""
    return [
        "git", "--git-dir", str(clone / ".git"), "--work-tree", str(clone),
        "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.commitGraph=false",
        *args,
    ]


def commit_id(value: str) -> str:
    """Commits handed to git in a clone are full ids: a ref name would be resolved in the agent's
    clone, where the agent may have moved it, and an id never reads as an option."""
    if not _COMMIT_ID.fullmatch(value):
        raise ValueError(f"expected a full commit id, not {value[:80]!r}")
    return value


def mirror_argv(mirror: Path, *args: str) -> list[str]:
    return ["git", "--git-dir", str(mirror), *args]


async def run_git(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    ok: tuple[int, ...] = (0,),
    timeout: float = GIT_TIMEOUT,  # noqa: ASYNC109 (each git command has its own bound)
) -> tuple[int, bytes]:
    """Run git without a shell; returns (exit code, stdout) and raises GitError for codes not in ok."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=git_env(env),
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        raise GitError(argv, None, f"no result after {timeout:.0f}s".encode()) from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave git running
            proc.kill()
            await proc.wait()
    if proc.returncode not in ok:
        raise GitError(argv, proc.returncode, err)
    return proc.returncode, out


async def ws_git(ws: Workspace, *args: str, **kwargs: Any) -> tuple[int, bytes]:
    """git in a workspace's clone (take it back first: ``files.reclaim``)."""
    return await run_git(clone_argv(ws.clone, *args), **kwargs)


async def refs(git: list[str], *names: str) -> dict[str, str]:
    """Those of ``names`` that exist, with their commits, from one ``for-each-ref``. Its patterns
    also match the refs below them (``refs/heads/a`` finds ``refs/heads/a/b``): only exact names count."""
    _, out = await run_git([*git, "for-each-ref", "--format=%(refname) %(objectname)", *names])
    found = dict(line.split(" ", 1) for line in out.decode().splitlines())
    return {ref: found[ref] for ref in names if ref in found}
