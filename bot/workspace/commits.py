"""The harvest, host-side, once the agent is done: commit what it left, then check what a push
would send (protected paths, binary or oversized files) before anything reaches the Forge."""

from __future__ import annotations

import asyncio
import fnmatch
import re
from collections.abc import Sequence
from contextlib import aclosing
from typing import NamedTuple

from bot.settings import MAX_HARVEST_BYTES, MAX_HARVEST_FILES, GitIdentity

from bot.workspace.git import commit_id, fields, finished, host_argv, spawn, ws_git
from bot.workspace.handover import TooLarge
from bot.workspace.layout import Workspace

_ZERO_SHA = re.compile(r"0+")


class Commit(NamedTuple):
    sha: str
    subject: str


_COMMIT_TYPES = (
    ("fix", {"fix", "fixes", "bug", "bugs", "flaky", "broken", "crash", "error", "errors", "failing",
             "fixing", "regression"}),
    ("docs", {"doc", "docs", "document", "documentation", "readme", "docstring", "docstrings"}),
    ("test", {"test", "tests", "testing", "coverage"}),
    ("refactor", {"refactor", "cleanup", "simplify", "rename", "restructure"}),
)
_CONVENTIONAL = re.compile(r"(feat|fix|docs|test|refactor|chore|perf|build|ci|style)(\([\w./-]+\))?!?: \S")
COMMIT_SUBJECT_CHARS = 72


def commit_message(task: str) -> str:
    """A conventional-commit subject for the task: ``fix: ...`` when it sounds like a fix, and so on."""
    summary = " ".join(task.split())
    if not _CONVENTIONAL.match(summary):
        words = re.findall(r"[a-z]+", summary.lower())
        kind = next((kind for kind, keys in _COMMIT_TYPES if keys & set(words)), "feat")
        if words[:1] == [kind]:  # "fix the flaky test" → "fix: the flaky test"
            summary = summary.split(" ", 1)[1] if " " in summary else ""
        summary = f"{kind}: {summary or 'changes by the agent'}"
    if len(summary) > COMMIT_SUBJECT_CHARS:
        summary = summary[: COMMIT_SUBJECT_CHARS - 3].rsplit(" ", 1)[0] + "..."
    return summary


async def commit_leftovers(ws: Workspace, message: str, identity: GitIdentity) -> bool:
    """Commit whatever the agent left uncommitted (taken in first: ``Workspaces.take_in``);
    False when there was nothing."""
    await ws_git(ws, "add", "--all", work_tree=True)
    code, _ = await ws_git(ws, "diff", "--cached", "--quiet", ok=(0, 1))
    if code == 0:
        return False
    await ws_git(ws, "commit", "--quiet", "--no-verify", "-m", message, env=identity.env(), work_tree=True)
    return True


async def commits_since(ws: Workspace, base: str) -> list[Commit]:
    """The commits a push would add on top of the ``base`` commit, oldest first."""
    _, out = await ws_git(ws, "log", "--reverse", "--format=%H %s", f"{commit_id(base)}..HEAD")
    return [Commit(*line.split(" ", 1)) for line in out.decode("utf-8", "replace").splitlines()]


# A keyword by which Gitea closes or reopens an issue that a commit names, once the commit is merged:
# "#N", "owner/repo#N", or a link to the issue (Gitea reads links to itself as "owner/repo#N"; any
# host is taken, since the Forge's own address may differ from the one the bot uses).
_CLOSING = re.compile(
    r"(?i)(?<![\w-])(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?|reopen(?:s|ed)?)\b:?\s+"
    r"(?:(?:[\w.-]+/[\w.-]+)?#|https?://\S+/[\w.-]+/[\w.-]+/(?:issues|pulls)/)(\d+)\b"
)


async def closed_by_commits(ws: Workspace, base: str) -> dict[str, set[int]]:
    """The issues each commit since ``base`` would close or reopen on merge, by the commit's id:
    only the bot writes the ``Closes`` line."""
    _, out = await ws_git(ws, "log", "--format=%H%x00%B%x00", f"{commit_id(base)}..HEAD")
    fields = out.decode("utf-8", "replace").split("\0")
    found = {}
    for sha, message in zip(fields[0::2], fields[1::2], strict=False):
        numbers = {int(n) for n in _CLOSING.findall(message)}
        if numbers:
            found[sha.strip()] = numbers
    return found


def _is_protected(path: str, protected: Sequence[str]) -> bool:
    """``path`` is one of ``protected`` or lies under one; an entry with ``*`` is a wildcard matched
    against the path and each directory above it (``.woodpecker*``: ``.woodpecker.yml``, ``.woodpecker/x``)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatchcase(prefix, p.rstrip("/")) for p in protected for prefix in prefixes)


async def check_branch(
    ws: Workspace, base: str, protected_paths: Sequence[str], max_file_bytes: int,
    max_files: int = MAX_HARVEST_FILES, max_bytes: int = MAX_HARVEST_BYTES,
) -> list[str]:
    """Why the commits since the ``base`` commit must not be pushed: protected paths touched,
    binary or oversized files. Every blob any commit adds counts (one added then replaced or
    deleted is still pushed), merges are compared with their first parent, a root commit with the
    empty tree, and binary means a NUL byte, whatever .gitattributes claims.

    Bounded whatever the agent committed: git's output is streamed, at most ``max_files``
    (path, blob) pairs are kept and at most ``max_bytes`` of blobs read, 8000 bytes of each held at
    once; past a limit, TooLarge."""
    argv = host_argv(
        ws.host_git, "log", "--format=", "--raw", "--root", "--no-abbrev", "--no-renames",
        "--diff-merges=first-parent", "-z", f"{commit_id(base)}..HEAD",
    )
    problems: set[str] = set()
    added: set[tuple[str, str]] = set()  # (path, blob) of every regular file some commit writes
    meta = None
    async with aclosing(fields(argv)) as stream:
        async for field in stream:
            if meta is None:
                meta = field
                continue
            path = field.decode("utf-8", "replace")
            _, mode, _, sha, _ = meta.decode().strip().split(" ")
            meta = None
            if _is_protected(path, protected_paths):
                problems.add(f"protected path changed: {path}")
            if mode.startswith("100") and not _ZERO_SHA.fullmatch(sha):
                added.add((path, sha))
                if len(added) > max_files:
                    raise TooLarge(f"the agent's commits add more than {max_files} files")
    sizes = await _blob_sizes(ws, {sha for _, sha in added})
    examined = {sha for sha, size in sizes.items() if size <= max_file_bytes}
    total = sum(sizes[sha] for sha in examined)
    if total > max_bytes:
        raise TooLarge(f"the agent's commits add {total} bytes of files, more than {max_bytes}")
    binary = await _binary_blobs(ws, examined)
    for path, sha in added:
        if sizes[sha] > max_file_bytes:
            problems.add(f"file over {max_file_bytes} bytes: {path} ({sizes[sha]} bytes)")
        elif sha in binary:
            problems.add(f"binary file: {path}")
    return sorted(problems)


async def _blob_sizes(ws: Workspace, shas: set[str]) -> dict[str, int]:
    if not shas:
        return {}
    query = "\n".join(shas).encode() + b"\n"
    _, out = await ws_git(ws, "cat-file", "--batch-check=%(objectname) %(objectsize)", stdin=query)
    return {sha: int(size) for sha, size in (line.split() for line in out.decode().splitlines())}


_SNIFF = 8000  # git's own binary heuristic looks this far


async def _binary_blobs(ws: Workspace, shas: set[str]) -> set[str]:
    """Blobs with a NUL byte in their first 8000 bytes, streamed from one ``cat-file --batch``:
    the rest of each blob is read and dropped in bounded chunks."""
    if not shas:
        return set()
    argv = host_argv(ws.host_git, "cat-file", "--batch")
    proc = await spawn(argv, stdin=True)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    async def feed() -> None:
        stdin.write("\n".join(shas).encode() + b"\n")
        await stdin.drain()
        stdin.close()

    feeder = asyncio.ensure_future(feed())
    binary = set()
    try:
        for _ in shas:
            sha, _, size = (await stdout.readline()).decode().split(" ")
            head = await stdout.readexactly(min(int(size), _SNIFF))
            if b"\0" in head:
                binary.add(sha)
            rest = int(size) - len(head) + 1  # and the newline after the content
            while rest:
                rest -= len(await stdout.readexactly(min(rest, 1 << 16)))
        await feeder
        await finished(proc, argv)
    finally:
        feeder.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return binary
