"""Running git host-side: no shell, no prompts, no system or user config, a minimal environment,
and a repository named explicitly: the mirror, or the bot's own git dir of a workspace, never a
``.git`` the agent wrote."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.workspace.files import refuse_nested_repositories
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


# What host git may take from the bot's environment: where to find programs and certificates, and
# the proxies. Nothing else, so no key or token the bot holds reaches git or what git might start.
_PASSED_ENV = (
    "PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "GIT_SSL_CAINFO", "GIT_SSL_CAPATH",
    "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "all_proxy",
)


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Never prompt; read no system or user config or attributes (the bot writes the only config
    git reads); no replace refs; only the file and HTTP transports; English messages."""
    return {
        **{name: os.environ[name] for name in _PASSED_ENV if name in os.environ},
        "HOME": "/nonexistent",
        "XDG_CONFIG_HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_ATTR_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_NO_REPLACE_OBJECTS": "1",
        "GIT_ALLOW_PROTOCOL": "file:http:https",
        "LC_ALL": "C",
        **(extra or {}),
    }


# Also in the bot's config of every git dir; repeated on the command line so that even a config
# that went wrong cannot start anything.
_NOTHING_TO_RUN = (
    "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.commitGraph=false",
    "-c", "core.multiPackIndex=false", "-c", "gc.auto=0", "-c", "maintenance.auto=false",
    "-c", "submodule.recurse=false", "-c", "fetch.recurseSubmodules=false", "-c", "log.showSignature=false",
)


def host_argv(git_dir: Path, *args: str, work_tree: Path | None = None) -> list[str]:
    """git in the bot's git dir of a workspace, with the agent's clone as work tree only when given."""
    tree = ["--work-tree", str(work_tree)] if work_tree else []
    return ["git", "--git-dir", str(git_dir), *tree, *_NOTHING_TO_RUN, *args]


def commit_id(value: str) -> str:
    """Commits handed to git in a clone are full ids: a ref name would be resolved in the agent's
    clone, where the agent may have moved it, and an id never reads as an option."""
    if not _COMMIT_ID.fullmatch(value):
        raise ValueError(f"expected a full commit id, not {value[:80]!r}")
    return value


def mirror_argv(mirror: Path, *args: str) -> list[str]:
    return ["git", "--git-dir", str(mirror), *_NOTHING_TO_RUN, *args]


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


async def ws_git(ws: Workspace, *args: str, work_tree: bool = False, **kwargs: Any) -> tuple[int, bytes]:
    """git in the bot's git dir of ``ws``; ``work_tree``: with the agent's clone as work tree, which
    must hold no repository of its own."""
    if work_tree:
        await asyncio.to_thread(refuse_nested_repositories, ws.clone)
    return await run_git(host_argv(ws.host_git, *args, work_tree=ws.clone if work_tree else None), **kwargs)


async def spawn(argv: Sequence[str], *, stdin: bool = False) -> asyncio.subprocess.Process:
    """git as a process to stream from, in git's environment; its stderr (a few lines) is read
    once stdout is done."""
    return await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=git_env(),
    )


async def finished(proc: asyncio.subprocess.Process, argv: Sequence[str]) -> None:
    """Wait for a streamed git; GitError with its message when it failed."""
    assert proc.stderr is not None
    err = await proc.stderr.read(8192)
    if await proc.wait() != 0:
        raise GitError(argv, proc.returncode, err)


async def fields(argv: Sequence[str], sep: bytes = b"\0") -> AsyncIterator[bytes]:
    """git's output split at ``sep``, read in bounded chunks: a caller that stops early stops git
    (use ``contextlib.aclosing``), and no more than one chunk and one field are held at a time."""
    proc = await spawn(argv)
    assert proc.stdout is not None
    try:
        rest = b""
        while chunk := await proc.stdout.read(1 << 16):
            *done, rest = (rest + chunk).split(sep)
            for field in done:
                yield field
        if rest:
            yield rest
        await finished(proc, argv)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def refs(git: list[str], *names: str) -> dict[str, str]:
    """Those of ``names`` that exist, with their commits, from one ``for-each-ref``. Its patterns
    also match the refs below them (``refs/heads/a`` finds ``refs/heads/a/b``): only exact names count."""
    _, out = await run_git([*git, "for-each-ref", "--format=%(refname) %(objectname)", *names])
    found = dict(line.split(" ", 1) for line in out.decode().splitlines())
    return {ref: found[ref] for ref in names if ref in found}
