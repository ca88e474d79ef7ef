"""What crosses between the agent's clone and the bot's git dir of it: plain files, never git.

Host-side git never runs in the ``.git`` the agent wrote: whatever config, hook, attribute,
include, alternate or index extension it planted there (even while a container still writes) is
never read. The bot's own git dir (``Workspace.host_git``, out of every container's reach) holds a
config the bot wrote and nothing else that could name a command. Two crossings:

- ``take_in``: the agent's object files are copied in, as git names them (loose objects and
  packs), regular files only, never followed, within a byte limit; and the commit its HEAD names
  becomes the bot's branch head. Nothing else of the agent's ``.git`` is read.
- ``hand_out``: before each container, the agent gets a fresh ``.git`` built from the bot's: its
  config, an empty hooks dir, no info/attributes, the refs packed, the objects hard-linked (root's and
  read-only). So nothing planted in one run acts in the next run's container either.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path

from bot.settings import GitIdentity

from bot.workspace.files import UnsafeWorkspace, real_dir
from bot.workspace.git import host_argv, refs, ws_git
from bot.workspace.layout import ANSWER, BLOCKED, Workspace

_LOOSE_DIR = re.compile(r"[0-9a-f]{2}")
_LOOSE = re.compile(r"[0-9a-f]{38}|[0-9a-f]{62}")
_PACK = re.compile(r"pack-[0-9a-f]{40,64}\.(pack|idx)")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_REF = re.compile(r"refs/[A-Za-z0-9._/@+-]{1,250}")
_CHUNK = 1 << 20
EXCLUDE = f"/{BLOCKED}\n/{ANSWER}\n"
# In the bot's git dir: the agent's HEAD as last handed out or taken in. Only a HEAD that differs
# is the agent's news; an old one taken in again would undo the bot's commit of its leftovers.
SEEN = "refs/dispatchbot/agent-head"
# A host git dir is bare (git refuses work-tree commands unless given one) and runs nothing.
_HOST_CORE = {
    "bare": "true", "hooksPath": "/dev/null", "fsmonitor": "false", "commitGraph": "false",
    "multiPackIndex": "false", "logallrefupdates": "false",
}
_HOST_SECTIONS = {
    "gc": {"auto": "0"}, "maintenance": {"auto": "false"}, "submodule": {"recurse": "false"},
    "fetch": {"recurseSubmodules": "false", "writeCommitGraph": "false"}, "pack": {"useBitmaps": "false"},
    "log": {"showSignature": "false"},
}


class TooLarge(ValueError):
    """The agent's commits exceed a harvest limit (objects or bytes): the run fails with this."""


def _config_value(value: str) -> str:
    if "\n" in value or "\0" in value:
        raise ValueError(f"git config value {value!r} must be one line")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def git_config(url: str, identity: GitIdentity | None, *, host: bool) -> str:
    """The only config git reads in a workspace: the bot's git dir's (``host``) or the agent's."""
    core = {"repositoryformatversion": "0", "filemode": "true", "bare": "false", "logallrefupdates": "true"}
    sections: dict[str, dict[str, str]] = {"core": core | (_HOST_CORE if host else {})}
    if host:
        sections |= _HOST_SECTIONS
    else:
        sections['remote "origin"'] = {"url": _config_value(url), "fetch": "+refs/heads/*:refs/remotes/origin/*"}
    if identity:
        sections["user"] = {"name": _config_value(identity.name), "email": _config_value(identity.email)}
    return "".join(
        f"[{name}]\n" + "".join(f"\t{key} = {value}\n" for key, value in values.items())
        for name, values in sections.items()
    )


def _open_plain(base: Path, rel: str) -> int | None:
    """A read-only fd on ``base/rel`` when every part of the path is a plain directory and the
    last a regular file; None otherwise (missing, symlink, FIFO, device...)."""
    path = base
    for part in rel.split("/")[:-1]:
        path = path / part
        try:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                return None
        except OSError:
            return None
    try:
        fd = os.open(base / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _object_files(objects: Path) -> Iterator[str]:
    """The object files of a git dir, as git names them, loose first, a pack before its index
    (git finds a pack by its index); anything else in there is ignored."""
    def entries(path: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(path) as it:
                return sorted((e for e in it if e.is_file(follow_symlinks=False)), key=lambda e: e.name)
        except (NotADirectoryError, FileNotFoundError):
            return []

    try:
        with os.scandir(objects) as it:
            dirs = sorted(e.name for e in it if e.is_dir(follow_symlinks=False) and _LOOSE_DIR.fullmatch(e.name))
    except FileNotFoundError:
        return
    for d in dirs:
        yield from (f"{d}/{e.name}" for e in entries(objects / d) if _LOOSE.fullmatch(e.name))
    packs = [e.name for e in entries(objects / "pack") if _PACK.fullmatch(e.name)]
    yield from (f"pack/{name}" for name in sorted(packs, key=lambda n: (n.endswith(".idx"), n)))


def _copy_objects(src: Path, dst: Path, max_bytes: int) -> None:
    """Copy the object files ``dst`` lacks, each under a temporary name until complete; TooLarge
    past ``max_bytes`` copied."""
    copied = 0
    for rel in _object_files(src):
        target = dst / rel
        if os.path.lexists(target):
            continue  # objects are named by their content: the bot's copy stands
        fd = _open_plain(src, rel)
        if fd is None:
            continue
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(f"tmp-{secrets.token_hex(6)}")
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
            try:
                while sent := os.sendfile(out, fd, None, _CHUNK):
                    copied += sent
                    if copied > max_bytes:
                        raise TooLarge(f"the agent's git objects exceed {max_bytes} bytes")
            finally:
                os.close(out)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)


def _read_ref_file(base: Path, rel: str) -> str | None:
    fd = _open_plain(base, rel)
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read(1024).decode("utf-8", "replace").strip()


def _packed_ref(git_dir: Path, name: str) -> str | None:
    fd = _open_plain(git_dir, "packed-refs")
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        for line in f:
            sha, _, ref = line.decode("utf-8", "replace").strip().partition(" ")
            if ref == name:
                return sha
    return None


def _agent_head(git_dir: Path) -> str | None:
    """The commit the agent's HEAD names, read as files: HEAD, then its ref, loose or packed.
    None when there is no HEAD or its branch has no commit yet."""
    text = _read_ref_file(git_dir, "HEAD")
    for _ in range(5):  # a ref may itself be symbolic
        if text is None or _COMMIT_ID.fullmatch(text):
            return text
        name = text.removeprefix("ref: ")
        if name == text or not _REF.fullmatch(name) or ".." in name:
            raise UnsafeWorkspace(f"the agent's HEAD names no commit: {text[:100]!r}")
        text = _read_ref_file(git_dir, name) or _packed_ref(git_dir, name)
    raise UnsafeWorkspace("the agent's HEAD is a chain of symbolic refs")


def _take_in_files(ws: Workspace, max_bytes: int) -> str | None:
    agent_git = real_dir(ws.clone) / ".git"
    try:
        if not stat.S_ISDIR(os.lstat(agent_git).st_mode):
            return None
    except FileNotFoundError:
        return None  # the agent removed its .git: its work tree still counts
    _copy_objects(agent_git / "objects", ws.host_git / "objects", max_bytes)
    return _agent_head(agent_git)


async def take_in(ws: Workspace, max_bytes: int) -> None:
    """The agent's objects, and its HEAD's commit as the bot's branch head with the index on it
    (stat data kept, so a commit of what it left sees only what changed)."""
    head = await asyncio.to_thread(_take_in_files, ws, max_bytes)
    if head and (await refs(host_argv(ws.host_git), SEEN)).get(SEEN) != head:
        await ws_git(ws, "reset", "--quiet", "--mixed", head, "--", work_tree=True, ok=(0, 1))
        await ws_git(ws, "update-ref", SEEN, head)


def _link_objects(src: Path, dst: Path) -> None:
    for rel in _object_files(src):
        (dst / rel).parent.mkdir(exist_ok=True)
        os.link(src / rel, dst / rel)


def _hand_out(ws: Workspace, identity: GitIdentity | None, packed_refs: str) -> None:
    clone, host = real_dir(ws.clone), ws.host_git
    fresh = clone / f".git.{secrets.token_hex(4)}.tmp"
    for part in ("objects/pack", "objects/info", "refs/heads", "refs/tags", "info", "hooks"):
        (fresh / part).mkdir(parents=True)
    _link_objects(host / "objects", fresh / "objects")
    for name in ("HEAD", "index"):
        if (host / name).is_file():
            shutil.copyfile(host / name, fresh / name)
    (fresh / "packed-refs").write_text(packed_refs)
    (fresh / "config").write_text(git_config(ws.url, identity, host=False))
    (fresh / "info" / "exclude").write_text(EXCLUDE)
    # The old .git is moved aside before the fresh one moves in, then deleted (never followed).
    old, aside = clone / ".git", clone / f".git.{secrets.token_hex(4)}.old"
    if os.path.lexists(old):
        os.rename(old, aside)
    os.rename(fresh, old)
    if os.path.lexists(aside):
        if stat.S_ISDIR(os.lstat(aside).st_mode):
            shutil.rmtree(aside)
        else:
            os.unlink(aside)


async def hand_out(ws: Workspace, identity: GitIdentity | None) -> None:
    """A fresh ``.git`` for the agent's next container, from the bot's git dir."""
    await ws_git(ws, "update-ref", SEEN, "HEAD")
    _, out = await ws_git(ws, "for-each-ref", "--format=%(objectname) %(refname)")
    lines = [line for line in out.decode().splitlines() if not line.endswith(" " + SEEN)]
    await asyncio.to_thread(_hand_out, ws, identity, "".join(f"{line}\n" for line in lines))
