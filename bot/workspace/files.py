"""Files an agent may have tampered with: read and written without following what it planted.

Trust boundary: once an agent ran, everything under ``repo/`` and ``.meta/`` is hostile. Host-side
git never runs in the agent's ``.git`` (``bot.workspace.handover``), and files the bot reads or
writes there never follow symlinks.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from bot.workspace.layout import Workspace


class UnsafeWorkspace(RuntimeError):
    """The agent left something host-side git or file access must not follow."""


def real_dir(path: Path) -> Path:
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise UnsafeWorkspace(f"{path} is not a plain directory")
    return path


def refuse_nested_repositories(clone: Path) -> None:
    """Refuse a clone holding a git repository below its top: host git asks such a repository for
    its status by running git in it, which reads that repository's config (a filter there is a
    command). Walked without following symlinks; the agent's own ``.git`` is not looked into."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(real_dir(clone)):
        if (".git" in dirnames or ".git" in filenames) and dirpath != str(clone):  # a directory, file or link
            found.append(os.path.relpath(os.path.join(dirpath, ".git"), clone))
        if ".git" in dirnames:
            dirnames.remove(".git")
        if len(found) == 3:  # enough to name
            break
    if found:
        raise UnsafeWorkspace(f"the workspace holds a git repository of its own at {', '.join(sorted(found))}, "
                              "where host git would run under that repository's config")


def safe_write(path: Path, text: str) -> None:
    """Replace ``path`` atomically; a symlink planted there is replaced, never followed."""
    real_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def safe_read(path: Path, limit: int) -> str | None:
    """At most ``limit`` bytes of a regular file; None when missing, a symlink, a FIFO or a device."""
    real_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read(limit).decode("utf-8", "replace")


def chown(ws: Workspace, uid: int, gid: int) -> None:
    """Hand the clone and .meta to the container user. Files hardlinked with the mirror (git
    objects) stay root's and read-only, so an agent cannot alter the mirror through them."""
    for top in (real_dir(ws.clone), real_dir(ws.meta)):
        os.chown(top, uid, gid, follow_symlinks=False)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                info = os.lstat(path)
                if stat.S_ISDIR(info.st_mode) or info.st_nlink == 1:
                    os.chown(path, uid, gid, follow_symlinks=False)
