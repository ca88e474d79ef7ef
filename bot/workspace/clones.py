"""Mirrors and clones: one bare mirror per repository, one clone per issue or pull request.

Only the mirror talks to the Forge, and only it and push ever see the token, which reaches git
as environment config, never in a URL, argv or file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
from pathlib import Path

from pydantic import SecretStr

from bot.names import validate_branch, validate_key, validate_repo, validate_tag
from bot.settings import MAX_HARVEST_BYTES, GitIdentity, Settings

from bot.workspace.files import UnsafeWorkspace, chown, safe_write
from bot.workspace.git import NETWORK_TIMEOUT, GitError, commit_id, host_argv, mirror_argv, refs, run_git, ws_git
from bot.workspace.handover import EXCLUDE, git_config, hand_out, take_in
from bot.workspace.layout import WORKSPACES, Workspace, WorkspaceDir

log = logging.getLogger(__name__)

# What git (curl) says when the Forge gave no answer, as opposed to refusing the push (a rejected
# ref, a protected branch, no permission), which is said by the Forge itself.
_NO_ANSWER = re.compile(
    r"Couldn't connect to server|Failed to connect|Connection refused|Connection reset|Connection timed out"
    r"|Operation timed out|Empty reply from server|Recv failure|Could not resolve host|returned error: 5\d\d"
    r"|RPC failed; HTTP 5\d\d|remote end hung up unexpectedly"
)
_REFUSED = re.compile(r"\[(remote )?rejected\]|returned error: 4\d\d")
PUSH_RETRY_FIRST = 1.0  # seconds; doubled after each push that got no answer, up to PUSH_RETRY_MAX
PUSH_RETRY_MAX = 30.0


def no_answer(e: GitError) -> bool:
    """The Forge did not answer (down, unreachable, 5xx, timed out): worth waiting for, unlike a refusal."""
    text = str(e)
    return e.returncode is None or (not _REFUSED.search(text) and bool(_NO_ANSWER.search(text)))



def parse_ids(user: str) -> tuple[int, int]:
    """``"1000:1000"`` or ``"1000"`` → (uid, gid); the container user must be numeric on the host."""
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise ValueError(f"container user {user!r} must be numeric uid[:gid]")
    return int(uid), int(gid or uid)


class Workspaces:
    """Mirrors and clones under one data directory; the only holder of the Forge token."""

    def __init__(
        self,
        data_dir: Path,
        forge_url: str,
        token: SecretStr | None = None,
        identity: GitIdentity | None = None,
        owner: str | None = None,
        max_bytes: int = MAX_HARVEST_BYTES,
    ) -> None:
        """``owner`` is the container user ("1000:1000"); workspaces are handed to it only when we
        run as root, since nobody else may chown. ``max_bytes``: at most this much of the agent's
        git objects is taken in."""
        if not forge_url:
            raise ValueError("forge_url is not set")
        self.data_dir = Path(data_dir).absolute()
        self.forge_url = forge_url.rstrip("/")
        self.token = token
        self.identity = identity or GitIdentity()
        self.owner_ids = parse_ids(owner) if owner and os.geteuid() == 0 else None
        self.max_bytes = max_bytes
        # A clone hard-links the mirror's objects; an agent running as their owner could rewrite them
        # and so poison every later clone of the repository: it gets copies instead.
        self.hard_links = not owner or parse_ids(owner)[0] != os.geteuid()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Workspaces:
        s = settings
        return cls(s.data_dir, s.forge_url or "", s.forge_token, s.git, s.limits.user, s.max_harvest_bytes)

    @property
    def _auth(self) -> dict[str, str]:
        """The token as environment config: never in a URL, argv or file."""
        if not self.token:
            return {}
        return {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: token {self.token.get_secret_value()}",
        }

    def url(self, owner: str, repo: str) -> str:
        return f"{self.forge_url}/{owner}/{repo}.git"

    def mirror_path(self, owner: str, repo: str) -> Path:
        validate_repo(owner, repo)
        return self.data_dir / "mirrors" / owner / f"{repo}.git"

    def existing(self, owner: str, repo: str, key: str, branch: str, base: str, start: str = "") -> Workspace:
        """A run's workspace, without touching the disk (after a restart, for the harvest).
        Every name is validated before it becomes part of a path."""
        root = self.directory(owner, repo, key).root
        branch, base = validate_branch(branch), validate_branch(base)
        return Workspace(owner, repo, key, root, branch, base, self.url(owner, repo), start and commit_id(start))

    def directory(self, owner: str, repo: str, key: str) -> WorkspaceDir:
        """Where the workspace ``key`` of a repository lives, its names validated first."""
        validate_repo(owner, repo)
        return WorkspaceDir(owner, repo, key, self.data_dir / WORKSPACES / owner / repo / validate_key(key))

    def at(self, root: str) -> WorkspaceDir | None:
        """The workspace whose root is ``root`` (as a container's label names it); None when that
        is no workspace of this data directory."""
        parts = Path(root).parts
        top = (self.data_dir / WORKSPACES).parts
        if len(parts) != len(top) + 3 or parts[: len(top)] != top:
            return None
        owner, repo, key = parts[len(top):]
        return WorkspaceDir(owner, repo, key, Path(root))

    def all(self) -> list[WorkspaceDir]:
        """Every workspace on disk, for the sweeper."""
        def subdirs(path: Path) -> list[Path]:
            if not path.is_dir():
                return []
            return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())

        return [
            WorkspaceDir(owner.name, repo.name, key.name, key)
            for owner in subdirs(self.data_dir / WORKSPACES)
            for repo in subdirs(owner)
            for key in subdirs(repo)
        ]

    def _lock(self, owner: str, repo: str) -> asyncio.Lock:
        """Held by whoever updates or reads a mirror: a fetch may repack under a reader's feet."""
        return self._locks.setdefault((owner, repo), asyncio.Lock())

    async def _update_mirror(self, owner: str, repo: str) -> Path:
        mirror = self.mirror_path(owner, repo)
        url = self.url(owner, repo)
        if (mirror / "HEAD").is_file():
            # Every ref is wanted, so protocol v2's ref filtering gains nothing and costs a round
            # trip: with v0 a fetch that finds nothing new is one request.
            every_ref = "+refs/*:refs/*"
            argv = mirror_argv(mirror, "-c", "protocol.version=0", "fetch", "--prune", "--quiet", url, every_ref)
            await run_git(argv, env=self._auth, timeout=NETWORK_TIMEOUT)
        else:  # clone beside it, then rename: a crash never leaves a half mirror in place
            tmp = mirror.with_name(mirror.name + ".tmp")
            await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
            mirror.parent.mkdir(parents=True, exist_ok=True)
            argv = ["git", "clone", "--mirror", "--quiet", url, str(tmp)]
            await run_git(argv, env=self._auth, timeout=NETWORK_TIMEOUT)
            tmp.rename(mirror)
        return mirror

    async def prepare(
        self, owner: str, repo: str, key: str, branch: str, base: str, new_branch: bool, start: str = ""
    ) -> Workspace:
        """A clone on ``branch``, ready for the container; a new branch starts from ``start`` if
        given, else from ``base``. Idempotent: an existing workspace is reused (resume) and keeps
        the agent's commits; it is fast-forwarded to the Forge when possible. Its ``.git`` is
        written afresh by the bot each time. One whose clone host git must not touch (an earlier
        agent left a repository in it, say) is removed and made afresh: else no run could use it."""
        ws = self.existing(owner, repo, key, branch, base, start)
        try:
            return await self._prepare(ws, new_branch)
        except UnsafeWorkspace as e:
            log.warning("%s/%s %s: made afresh, since %s", owner, repo, key, e)
            await remove_workspace(ws)
            return await self._prepare(ws, new_branch)

    async def _prepare(self, ws: Workspace, new_branch: bool) -> Workspace:
        owner, repo = ws.owner, ws.repo
        async with self._lock(owner, repo):
            mirror = await self._update_mirror(owner, repo)
            ws.meta.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(ws.host_git):  # noqa: ASYNC240 (one lstat)
                await _new_host_git(ws, mirror, self.hard_links)
            await _sync(ws, mirror)
        if os.path.lexists(ws.clone):  # noqa: ASYNC240 (one lstat)
            await self.take_in(ws)
        else:
            ws.clone.mkdir()
        await _checkout(ws, new_branch)
        await hand_out(ws, self.identity)
        if self.owner_ids:
            await asyncio.to_thread(chown, ws, *self.owner_ids)
        return ws

    async def take_in(self, ws: Workspace) -> None:
        """The agent's commits into the bot's git dir (``handover.take_in``), before any host git
        looks at them."""
        await take_in(ws, self.max_bytes)

    async def base_commit(self, ws: Workspace) -> str:
        """The Forge commit a push of this workspace builds on: its branch on the Forge if that
        exists, else the commit it started from (``ws.start`` or the base branch). Read from the
        mirror, never from the clone, whose refs the agent may have moved; the clone is synced
        first so the commit is there for git log."""
        mirror = self.mirror_path(ws.owner, ws.repo)
        async with self._lock(ws.owner, ws.repo):
            await _sync(ws, mirror)
            branch, base = f"refs/heads/{ws.branch}", f"refs/heads/{ws.base_branch}"
            heads = await refs(mirror_argv(mirror), branch, base)
        found = heads.get(branch) or ws.start or heads.get(base)
        if not found:
            raise ValueError(f"neither {ws.branch!r} nor {ws.base_branch!r} exists in {ws.owner}/{ws.repo}")
        return found

    async def tag_commit(self, owner: str, repo: str, tag: str) -> str | None:
        """The commit ``tag`` points at on the Forge (an annotated tag peeled), from the mirror
        updated first; None when there is no such tag."""
        validate_tag(tag)
        async with self._lock(owner, repo):
            mirror = await self._update_mirror(owner, repo)
            argv = mirror_argv(mirror, "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{commit}}")
            code, out = await run_git(argv, ok=(0, 1))
        return out.decode().strip() if code == 0 else None

    async def push(self, ws: Workspace, branch: str, until: float = 0.0) -> str:
        """Push HEAD to ``branch`` on the Forge, host-side, never forced; returns the pushed commit.

        A push the Forge refused fails at once, with git's reason. One that got no answer is tried
        again, waiting longer each time, until the Forge answers or ``until`` (epoch seconds) has
        passed (0: one attempt): pushing the same commit again is harmless, whether the lost attempt landed or not.
        """
        validate_branch(branch)
        _, head = await ws_git(ws, "rev-parse", "--verify", "HEAD^{commit}")
        sha = head.decode().strip()
        refspec = f"{sha}:refs/heads/{branch}"
        wait = PUSH_RETRY_FIRST
        while True:
            try:
                await ws_git(ws, "push", "--quiet", ws.url, refspec, env=self._auth, timeout=NETWORK_TIMEOUT)
                return sha
            except GitError as e:
                if not no_answer(e) or time.time() + wait > until:
                    raise
                log.warning("the Forge gave no answer to a push of %s; trying again in %.0f s", ws.branch, wait)
            await asyncio.sleep(wait)
            wait = min(wait * 2, PUSH_RETRY_MAX)


async def _new_host_git(ws: Workspace, mirror: Path, hard_links: bool) -> None:
    """The bot's git dir of a workspace: a local clone of the mirror (objects hard-linked unless the
    agent runs as the bot's own user: the container's objects are linked from here), moved into
    place once complete, with the bot's config."""
    tmp = ws.host_git.with_name(ws.host_git.name + ".tmp")
    await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    links = [] if hard_links else ["--no-hardlinks"]
    await run_git(["git", "clone", "--local", *links, "--no-checkout", "--template=", "--quiet", str(mirror), str(tmp)])
    safe_write(tmp / ".git" / "config", git_config(ws.url, None, host=True))
    (tmp / ".git" / "info").mkdir(exist_ok=True)
    safe_write(tmp / ".git" / "info" / "exclude", EXCLUDE)
    (tmp / ".git").rename(ws.host_git)
    tmp.rmdir()


async def _sync(ws: Workspace, mirror: Path) -> None:
    """Update the clone's view of the Forge from the mirror: no network, no token."""
    await ws_git(
        ws, "fetch", "--prune", "--quiet", str(mirror), "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*"
    )


async def _checkout(ws: Workspace, new_branch: bool) -> None:
    """Local branch first (resume), else the Forge's branch, else a new branch from the base."""
    local, remote = f"refs/heads/{ws.branch}", f"refs/remotes/origin/{ws.branch}"
    existing = await refs(host_argv(ws.host_git), local, remote)
    if local in existing:
        await ws_git(ws, "checkout", "--quiet", ws.branch, work_tree=True)
        if remote in existing:
            await ws_git(ws, "merge", "--ff-only", "--quiet", remote, work_tree=True)
    elif remote in existing:
        await ws_git(ws, "checkout", "--quiet", "-b", ws.branch, remote, work_tree=True)
    elif new_branch:
        base = ws.start or f"refs/remotes/origin/{ws.base_branch}"
        await ws_git(ws, "checkout", "--quiet", "--no-track", "-b", ws.branch, base, work_tree=True)
    else:
        raise ValueError(f"branch {ws.branch!r} does not exist in {ws.owner}/{ws.repo}")


async def recent_commits(git_dir: Path, count: int = 20) -> str:
    """``git log --oneline`` in the bot's git dir of a clone, "" when it has no history."""
    code, out = await run_git(
        host_argv(git_dir, "log", f"-{count}", "--oneline", "--no-decorate", "--no-show-signature"), ok=(0, 128)
    )
    return out.decode("utf-8", "replace") if code == 0 else ""


async def remove_workspace(ws: Workspace | WorkspaceDir) -> None:
    """The workspace and the bot's git dir of it; rmtree never follows symlinks, so whatever
    the agent left is safe to delete."""
    for path in (ws.root, ws.host_git):
        try:
            await asyncio.to_thread(shutil.rmtree, path)
        except FileNotFoundError:
            pass
