"""The harvest, host-side, once the agent is done: commit what it left, then check what a push
would send (protected paths, binary or oversized files) before anything reaches the Forge."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import NamedTuple

from bot.settings import GitIdentity

from bot.workspace.files import reclaim
from bot.workspace.git import commit_id, ws_git
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
    """Commit whatever the agent left uncommitted; False when there was nothing."""
    await reclaim(ws)
    await ws_git(ws, "add", "--all")
    code, _ = await ws_git(ws, "diff", "--cached", "--quiet", ok=(0, 1))
    if code == 0:
        return False
    await ws_git(ws, "commit", "--quiet", "--no-verify", "-m", message, env=identity.env())
    return True


async def commits_since(ws: Workspace, base: str) -> list[Commit]:
    """The commits a push would add on top of the ``base`` commit, oldest first."""
    await reclaim(ws)
    _, out = await ws_git(ws, "log", "--reverse", "--format=%H %s", f"{commit_id(base)}..HEAD")
    return [Commit(*line.split(" ", 1)) for line in out.decode("utf-8", "replace").splitlines()]


# A keyword by which Gitea closes or reopens an issue that a commit names, once the commit is merged.
_CLOSING = re.compile(
    r"(?i)(?<![\w-])(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?|reopen(?:s|ed)?)\b:?\s+"
    r"(?:[\w.-]+/[\w.-]+)?#(\d+)\b"
)


async def closed_by_commits(ws: Workspace, base: str) -> dict[str, set[int]]:
    """The issues each commit since ``base`` would close or reopen on merge, by the commit's id:
    only the bot writes the ``Closes`` line."""
    await reclaim(ws)
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
    ws: Workspace, base: str, protected_paths: Sequence[str], max_file_bytes: int
) -> list[str]:
    """Why the commits since the ``base`` commit must not be pushed: protected paths touched,
    binary or oversized files. Every commit counts (a blob added then deleted is still pushed),
    merges are compared with their first parent, a root commit with the empty tree, and binary
    means a NUL byte, whatever .gitattributes claims."""
    await reclaim(ws)
    _, out = await ws_git(
        ws, "log", "--format=", "--raw", "--root", "--no-abbrev", "--no-renames",
        "--diff-merges=first-parent", "-z", f"{commit_id(base)}..HEAD",
    )
    fields = out.decode("utf-8", "replace").split("\0")
    problems: set[str] = set()
    files: dict[str, str] = {}  # path -> blob of a regular file written by some commit
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):
        _, mode, _, sha, _ = meta.strip().split(" ")
        if _is_protected(path, protected_paths):
            problems.add(f"protected path changed: {path}")
        if mode.startswith("100") and not _ZERO_SHA.fullmatch(sha):
            files[path] = sha
    sizes = await _blob_sizes(ws, set(files.values()))
    small = {sha for sha, size in sizes.items() if size <= max_file_bytes}
    binary = await _binary_blobs(ws, small)
    for path, sha in files.items():
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


async def _binary_blobs(ws: Workspace, shas: set[str]) -> set[str]:
    """Blobs with a NUL byte in their first 8000 bytes, git's own heuristic."""
    if not shas:
        return set()
    _, out = await ws_git(ws, "cat-file", "--batch", stdin="\n".join(shas).encode() + b"\n")
    binary, pos = set(), 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        sha, _, size = out[pos:header_end].decode().split(" ")
        start = header_end + 1
        if b"\0" in out[start : start + min(int(size), 8000)]:
            binary.add(sha)
        pos = start + int(size) + 1
    return binary
