"""Files an agent may have tampered with: read and written without following what it planted.

Trust boundary: once an agent ran, everything under ``repo/`` and ``.meta/`` is hostile. Host-side
git therefore first takes the repository back (``reclaim``): no symlinks or indirections inside
``.git``, and a ``.git/config`` written by the bot. Files the bot reads or writes there never
follow symlinks.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import stat
from pathlib import Path

from bot.settings import GitIdentity

from bot.workspace.layout import ANSWER, BLOCKED, Workspace

# Files that make git read objects or refs from elsewhere on the host, or rewrite history so the
# commits git log shows differ from those a push sends (grafts, shallow roots).
_INDIRECTIONS = (
    "commondir", "objects/info/alternates", "objects/info/http-alternates", "info/grafts", "shallow",
)


class UnsafeWorkspace(RuntimeError):
    """The agent left something host-side git or file access must not follow."""


def real_dir(path: Path) -> Path:
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise UnsafeWorkspace(f"{path} is not a plain directory")
    return path


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


def _config_value(value: str) -> str:
    if "\n" in value or "\0" in value:
        raise ValueError(f"git config value {value!r} must be one line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _git_config(url: str, identity: GitIdentity | None) -> str:
    sections = {
        "core": {
            "repositoryformatversion": "0", "filemode": "true", "bare": "false", "logallrefupdates": "true",
        },
        'remote "origin"': {"url": _config_value(url), "fetch": "+refs/heads/*:refs/remotes/origin/*"},
    }
    if identity:
        sections["user"] = {"name": _config_value(identity.name), "email": _config_value(identity.email)}
    return "".join(
        f"[{name}]\n" + "".join(f"\t{key} = {value}\n" for key, value in values.items())
        for name, values in sections.items()
    )


async def reclaim(ws: Workspace, identity: GitIdentity | None = None) -> None:
    """Take the clone back before host-side git runs in it, in a thread: a large .git takes a
    while to walk, and the event loop must keep answering meanwhile."""
    await asyncio.to_thread(_reclaim, ws, identity)


def _reclaim(ws: Workspace, identity: GitIdentity | None) -> None:
    """Refuse symlinks and indirections in .git, and replace the config (hooks paths, filters,
    fsmonitor, insteadOf, ... all gone)."""
    git_dir = real_dir(real_dir(ws.clone) / ".git")
    for dirpath, dirnames, filenames in os.walk(git_dir):
        for name in dirnames + filenames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise UnsafeWorkspace(f"symlink in .git: {os.path.join(dirpath, name)}")
    for name in _INDIRECTIONS:
        if os.path.lexists(git_dir / name):
            raise UnsafeWorkspace(f"refusing a workspace with .git/{name}")
    safe_write(git_dir / "config", _git_config(ws.url, identity))
    (git_dir / "info").mkdir(exist_ok=True)
    safe_write(git_dir / "info" / "exclude", f"/{BLOCKED}\n/{ANSWER}\n")


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
