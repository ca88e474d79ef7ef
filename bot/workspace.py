"""Workspaces: one bare mirror per repository, one clone per issue or pull request, and the
host-side harvest (commit, check, push) once the agent is done.

Layout under the data directory::

    mirrors/<owner>/<repo>.git              bare mirror, the only clone that talks to the Forge
    workspaces/<owner>/<repo>/<key>/repo/   the agent's clone (self-contained, no alternates)
    workspaces/<owner>/<repo>/<key>/.meta/  prompt, logs, run record

Trust boundary: once an agent ran, everything under ``repo/`` and ``.meta/`` is hostile. Host-side
git therefore names the repository explicitly (no discovery that could climb into a parent repo,
no ownership shortcuts), runs without hooks, and first takes the repository back (``_reclaim``):
no symlinks or indirections inside ``.git``, and a ``.git/config`` written by the bot. Files the
bot reads or writes there never follow symlinks. The Forge token reaches git only through
environment config, and only for the mirror and for push.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import re
import secrets
import shlex
import shutil
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import SecretStr

from bot.settings import GitIdentity, Settings

GIT_TIMEOUT = 120.0
NETWORK_TIMEOUT = 900.0
BLOCKED = "BLOCKED.md"
ANSWER = "ANSWER.md"
MAX_BLOCKED_BYTES = 16 * 1024
SLUG_CHARS = 40

_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_MAX_BRANCH = 200
# Files that make git read objects or refs from elsewhere on the host, or rewrite history so the
# commits git log shows differ from those a push sends (grafts, shallow roots).
_INDIRECTIONS = (
    "commondir", "objects/info/alternates", "objects/info/http-alternates", "info/grafts", "shallow",
)
_ZERO_SHA = re.compile(r"0+")
_COMMIT_ID = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class GitError(RuntimeError):
    """A git command failed or timed out; the message carries git's own explanation."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: bytes) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        detail = stderr.decode("utf-8", "replace").strip()[-800:]
        status = "timed out" if returncode is None else f"failed with exit {returncode}"
        super().__init__(f"`{shlex.join(argv)[:300]}` {status}: {detail}")


class UnsafeWorkspace(RuntimeError):
    """The agent left something host-side git or file access must not follow."""


# --- validation ------------------------------------------------------------------------------


def validate_repo(owner: str, repo: str) -> None:
    """Gitea's naming rules as far as paths care: owners start with a letter or digit; repository
    names may start with a dot (``.profile``) but are never ``.``/``..`` and never start with '-'."""
    if not _OWNER.fullmatch(owner):
        raise ValueError(f"invalid owner {owner[:60]!r}: expected 1-40 letters, digits, '.', '_' or '-'")
    if not _REPO.fullmatch(repo) or repo in (".", "..") or repo.startswith("-"):
        raise ValueError(
            f"invalid repository {repo[:60]!r}: expected 1-100 letters, digits, '.', '_' or '-', "
            "not '.', '..' or starting with '-'"
        )


def validate_key(key: str) -> str:
    """A workspace key is one path component chosen by the bot (``issue-3``, ``pr-7``, ...)."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid workspace key {key[:60]!r}")
    return key


def validate_branch(name: str) -> str:
    """Refuse anything git would not take as a branch, or that could act as an option or path trick."""
    reason = _branch_problem(name)
    if reason:
        raise ValueError(f"invalid branch name {name[:80]!r}: {reason}")
    return name


def _branch_problem(name: str) -> str | None:
    if not name or len(name) > _MAX_BRANCH:
        return f"must be 1-{_MAX_BRANCH} characters"
    if name.startswith("-"):
        return "must not start with '-'"
    if ".." in name or "@{" in name or name in ("HEAD", "@"):
        return "must not contain '..' or '@{' or be HEAD"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in name):
        return "must not contain whitespace or control characters"
    return None if _git_accepts_branch(name) else "rejected by git check-ref-format"


@functools.lru_cache(maxsize=1024)
def _git_accepts_branch(name: str) -> bool:
    """git's own rules, asked once per name: the base branch is checked on every prepare."""
    argv = ["git", "check-ref-format", "--branch", name]
    return subprocess.run(argv, cwd="/", capture_output=True, env=_git_env(), timeout=10).returncode == 0


def workspace_key(number: int, is_pull: bool) -> str:
    if number < 1:
        raise ValueError(f"invalid issue number {number}")
    return f"{'pr' if is_pull else 'issue'}-{number}"


def branch_key(branch: str) -> str:
    """A key for a run on a branch; the hash keeps ``a/b`` and ``a-b`` apart."""
    validate_branch(branch)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", branch).strip(".-")[:60]
    return f"branch-{safe}-{hashlib.sha256(branch.encode()).hexdigest()[:8]}"


def branch_for(task: str, number: int) -> str:
    """``agent/<slug of the task>``; ``agent/issue-N`` when the task has no usable words."""
    return branch_choices(task, number)[0]


def branch_choices(task: str, number: int) -> tuple[str, ...]:
    """The branch for an issue's run, then the one to use when another issue already has it:
    two issues asking for the same task must not push to one branch."""
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:SLUG_CHARS].rstrip("-")
    if not slug:
        return (validate_branch(f"agent/issue-{number}"),)
    return validate_branch(f"agent/{slug}"), validate_branch(f"agent/{slug}-issue-{number}")


def is_fork(pull: Mapping[str, Any]) -> bool:
    """Whether a pull request payload comes from another repository; unknown counts as a fork."""

    def repo_id(side: str) -> Any:
        branch = pull.get(side) or {}
        return branch.get("repo_id") or (branch.get("repo") or {}).get("id")

    head, base = repo_id("head"), repo_id("base")
    return head is None or head != base


def parse_ids(user: str) -> tuple[int, int]:
    """``"1000:1000"`` or ``"1000"`` → (uid, gid); the container user must be numeric on the host."""
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or not (gid or uid).isdigit():
        raise ValueError(f"container user {user!r} must be numeric uid[:gid]")
    return int(uid), int(gid or uid)


# --- running git -----------------------------------------------------------------------------


def _git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Never prompt, ignore the host user's ~/.gitconfig and any replace refs, English messages."""
    return {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_NO_REPLACE_OBJECTS": "1",
        "LC_ALL": "C",
        **(extra or {}),
    }


def _git_argv(clone: Path, *args: str) -> list[str]:
    """git in a clone the agent touched: explicit repository and work tree (no discovery, no
    ownership check), no hooks, no fsmonitor, no commit-graph file the agent could have forged."""
    return [
        "git", "--git-dir", str(clone / ".git"), "--work-tree", str(clone),
        "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false", "-c", "core.commitGraph=false",
        *args,
    ]


async def _git(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    ok: tuple[int, ...] = (0,),
    timeout: float = GIT_TIMEOUT,
) -> tuple[int, bytes]:
    """Run git without a shell; returns (exit code, stdout) and raises GitError for codes not in ok."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_git_env(env),
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


def _mirror_argv(mirror: Path, *args: str) -> list[str]:
    return ["git", "--git-dir", str(mirror), *args]


async def _ws_git(ws: Workspace, *args: str, **kwargs: Any) -> tuple[int, bytes]:
    return await _git(_git_argv(ws.clone, *args), **kwargs)


# --- files an agent may have tampered with ---------------------------------------------------


def _real_dir(path: Path) -> Path:
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise UnsafeWorkspace(f"{path} is not a plain directory")
    return path


def safe_write(path: Path, text: str) -> None:
    """Replace ``path`` atomically; a symlink planted there is replaced, never followed."""
    _real_dir(path.parent)
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
    _real_dir(path.parent)
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


def _reclaim(ws: Workspace, identity: GitIdentity | None = None) -> None:
    """Take the clone back before host-side git runs in it: refuse symlinks and indirections in
    .git, and replace the config (hooks paths, filters, fsmonitor, insteadOf, ... all gone)."""
    git_dir = _real_dir(_real_dir(ws.clone) / ".git")
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


def _chown(ws: Workspace, uid: int, gid: int) -> None:
    """Hand the clone and .meta to the container user. Files hardlinked with the mirror (git
    objects) stay root's and read-only, so an agent cannot alter the mirror through them."""
    for top in (_real_dir(ws.clone), _real_dir(ws.meta)):
        os.chown(top, uid, gid, follow_symlinks=False)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                path = os.path.join(dirpath, name)
                info = os.lstat(path)
                if stat.S_ISDIR(info.st_mode) or info.st_nlink == 1:
                    os.chown(path, uid, gid, follow_symlinks=False)


# --- workspaces ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workspace:
    owner: str
    repo: str
    key: str
    root: Path
    branch: str
    base_branch: str
    url: str  # the Forge clone URL, without credentials

    @property
    def clone(self) -> Path:
        return self.root / "repo"

    @property
    def meta(self) -> Path:
        return self.root / ".meta"


class WorkspaceDir(NamedTuple):
    """A workspace found on disk, for the sweeper."""

    owner: str
    repo: str
    key: str
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / ".meta"


class Commit(NamedTuple):
    sha: str
    subject: str


class Workspaces:
    """Mirrors and clones under one data directory; the only holder of the Forge token."""

    def __init__(
        self,
        data_dir: Path,
        forge_url: str,
        token: SecretStr | None = None,
        identity: GitIdentity | None = None,
        owner: str | None = None,
    ) -> None:
        """``owner`` is the container user ("1000:1000"); workspaces are handed to it only when we
        run as root, since nobody else may chown."""
        if not forge_url:
            raise ValueError("forge_url is not set")
        self.data_dir = Path(data_dir).absolute()
        self.forge_url = forge_url.rstrip("/")
        self.token = token
        self.identity = identity or GitIdentity()
        self.owner_ids = parse_ids(owner) if owner and os.geteuid() == 0 else None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Workspaces:
        s = settings
        return cls(s.data_dir, s.forge_url or "", s.forge_token, s.git, s.limits.user)

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

    def existing(self, owner: str, repo: str, key: str, branch: str, base: str) -> Workspace:
        """A run's workspace, without touching the disk (after a restart, for the harvest).
        Every name is validated before it becomes part of a path."""
        validate_repo(owner, repo)
        root = self.data_dir / "workspaces" / owner / repo / validate_key(key)
        branch, base = validate_branch(branch), validate_branch(base)
        return Workspace(owner, repo, key, root, branch, base, self.url(owner, repo))

    def all(self) -> list[WorkspaceDir]:
        """Every workspace on disk, for the sweeper."""
        def subdirs(path: Path) -> list[Path]:
            if not path.is_dir():
                return []
            return sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink())

        return [
            WorkspaceDir(owner.name, repo.name, key.name, key)
            for owner in subdirs(self.data_dir / "workspaces")
            for repo in subdirs(owner)
            for key in subdirs(repo)
        ]

    def _lock(self, owner: str, repo: str) -> asyncio.Lock:
        """Held by whoever updates or reads a mirror: a fetch may repack under a reader's feet."""
        return self._locks.setdefault((owner, repo), asyncio.Lock())

    async def ensure_mirror(self, owner: str, repo: str) -> Path:
        """Create or update the bare mirror."""
        async with self._lock(owner, repo):
            return await self._update_mirror(owner, repo)

    async def _update_mirror(self, owner: str, repo: str) -> Path:
        mirror = self.mirror_path(owner, repo)
        url = self.url(owner, repo)
        if (mirror / "HEAD").is_file():
            # Every ref is wanted, so protocol v2's ref filtering gains nothing and costs a round
            # trip: with v0 a fetch that finds nothing new is one request.
            every_ref = "+refs/*:refs/*"
            argv = _mirror_argv(mirror, "-c", "protocol.version=0", "fetch", "--prune", "--quiet", url, every_ref)
            await _git(argv, env=self._auth, timeout=NETWORK_TIMEOUT)
        else:  # clone beside it, then rename: a crash never leaves a half mirror in place
            tmp = mirror.with_name(mirror.name + ".tmp")
            await asyncio.to_thread(shutil.rmtree, tmp, ignore_errors=True)
            mirror.parent.mkdir(parents=True, exist_ok=True)
            argv = ["git", "clone", "--mirror", "--quiet", url, str(tmp)]
            await _git(argv, env=self._auth, timeout=NETWORK_TIMEOUT)
            tmp.rename(mirror)
        return mirror

    async def prepare(
        self, owner: str, repo: str, key: str, branch: str, base: str, new_branch: bool
    ) -> Workspace:
        """A clone on ``branch``, ready for the container. Idempotent: an existing workspace is
        reused (resume) and keeps its local commits; it is fast-forwarded to the Forge when possible."""
        ws = self.existing(owner, repo, key, branch, base)
        async with self._lock(owner, repo):
            mirror = await self._update_mirror(owner, repo)
            ws.meta.mkdir(parents=True, exist_ok=True)
            fresh = not await asyncio.to_thread(os.path.lexists, ws.clone)
            if fresh:  # has the mirror's branches as origin/*; the work tree is written by _checkout
                await _git(["git", "clone", "--local", "--no-checkout", "--quiet", str(mirror), str(ws.clone)])
            _reclaim(ws, self.identity)
            if not fresh:
                await _sync(ws, mirror)
        await _checkout(ws, new_branch)
        if self.owner_ids:
            await asyncio.to_thread(_chown, ws, *self.owner_ids)
        return ws

    async def base_commit(self, ws: Workspace) -> str:
        """The Forge commit a push of this workspace builds on: its branch on the Forge if that
        exists, else the base branch. Read from the mirror, never from the clone, whose refs the
        agent may have moved; the clone is synced first so the commit is there for git log."""
        mirror = self.mirror_path(ws.owner, ws.repo)
        _reclaim(ws)
        async with self._lock(ws.owner, ws.repo):
            await _sync(ws, mirror)
            refs = [f"refs/heads/{branch}" for branch in (ws.branch, ws.base_branch)]
            heads = await _refs(_mirror_argv(mirror), *refs)
        for ref in refs:
            if ref in heads:
                return heads[ref]
        raise ValueError(f"neither {ws.branch!r} nor {ws.base_branch!r} exists in {ws.owner}/{ws.repo}")

    async def push(self, ws: Workspace, branch: str) -> str:
        """Push HEAD to ``branch`` on the Forge, host-side, never forced; returns the pushed commit."""
        validate_branch(branch)
        _reclaim(ws)
        _, head = await _ws_git(ws, "rev-parse", "--verify", "HEAD^{commit}")
        sha = head.decode().strip()
        refspec = f"{sha}:refs/heads/{branch}"
        await _ws_git(ws, "push", "--quiet", ws.url, refspec, env=self._auth, timeout=NETWORK_TIMEOUT)
        return sha


async def _sync(ws: Workspace, mirror: Path) -> None:
    """Update the clone's view of the Forge from the mirror: no network, no token."""
    await _ws_git(ws, "fetch", "--prune", "--quiet", str(mirror), "+refs/heads/*:refs/remotes/origin/*")


async def _refs(git: list[str], *refs: str) -> dict[str, str]:
    """Those of ``refs`` that exist, with their commits, from one ``for-each-ref``. Its patterns
    also match the refs below them (``refs/heads/a`` finds ``refs/heads/a/b``): only exact names count."""
    _, out = await _git([*git, "for-each-ref", "--format=%(refname) %(objectname)", *refs])
    found = dict(line.split(" ", 1) for line in out.decode().splitlines())
    return {ref: found[ref] for ref in refs if ref in found}


async def _checkout(ws: Workspace, new_branch: bool) -> None:
    """Local branch first (resume), else the Forge's branch, else a new branch from the base."""
    local, remote = f"refs/heads/{ws.branch}", f"refs/remotes/origin/{ws.branch}"
    existing = await _refs(_git_argv(ws.clone), local, remote)
    if local in existing:
        await _ws_git(ws, "checkout", "--quiet", ws.branch)
        if remote in existing:
            await _ws_git(ws, "merge", "--ff-only", "--quiet", remote)
    elif remote in existing:
        await _ws_git(ws, "checkout", "--quiet", "-b", ws.branch, remote)
    elif new_branch:
        base = f"refs/remotes/origin/{ws.base_branch}"
        await _ws_git(ws, "checkout", "--quiet", "--no-track", "-b", ws.branch, base)
    else:
        raise ValueError(f"branch {ws.branch!r} does not exist in {ws.owner}/{ws.repo}")


async def recent_commits(clone: Path, count: int = 20) -> str:
    """``git log --oneline`` of the clone, "" when it has no history."""
    code, out = await _git(
        _git_argv(clone, "log", f"-{count}", "--oneline", "--no-decorate", "--no-show-signature"), ok=(0, 128)
    )
    return out.decode("utf-8", "replace") if code == 0 else ""


async def remove_workspace(ws: Workspace | WorkspaceDir) -> None:
    """rmtree never follows symlinks, so whatever the agent left is safe to delete."""
    try:
        await asyncio.to_thread(shutil.rmtree, ws.root)
    except FileNotFoundError:
        pass


# --- BLOCKED.md / ANSWER.md ------------------------------------------------------------------


def clear_blocked(ws: Workspace) -> None:
    """Remove a stale question before a spawn, so only a new one counts."""
    _real_dir(ws.clone)
    (ws.clone / BLOCKED).unlink(missing_ok=True)


def read_blocked(ws: Workspace) -> str | None:
    """The agent's question, if it left a non-empty BLOCKED.md."""
    text = safe_read(ws.clone / BLOCKED, MAX_BLOCKED_BYTES) or ""
    return text.strip() or None


def write_answer(ws: Workspace, text: str) -> None:
    safe_write(ws.clone / ANSWER, text)


# --- harvest ---------------------------------------------------------------------------------

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


def _identity_env(identity: GitIdentity) -> dict[str, str]:
    return {
        f"GIT_{who}_{what}": value
        for who in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", identity.name), ("EMAIL", identity.email))
    }


async def commit_leftovers(ws: Workspace, message: str, identity: GitIdentity) -> bool:
    """Commit whatever the agent left uncommitted; False when there was nothing."""
    _reclaim(ws)
    await _ws_git(ws, "add", "--all")
    code, _ = await _ws_git(ws, "diff", "--cached", "--quiet", ok=(0, 1))
    if code == 0:
        return False
    await _ws_git(ws, "commit", "--quiet", "--no-verify", "-m", message, env=_identity_env(identity))
    return True


def _commit_id(base: str) -> str:
    """Bases are commit ids (from ``Workspaces.base_commit``): a ref name would be resolved in the
    agent's clone, where the agent may have moved it."""
    if not _COMMIT_ID.fullmatch(base):
        raise ValueError(f"base must be a full commit id, not {base[:80]!r}")
    return base


async def commits_since(ws: Workspace, base: str) -> list[Commit]:
    """The commits a push would add on top of the ``base`` commit, oldest first."""
    _reclaim(ws)
    _, out = await _ws_git(ws, "log", "--reverse", "--format=%H %s", f"{_commit_id(base)}..HEAD")
    return [Commit(*line.split(" ", 1)) for line in out.decode("utf-8", "replace").splitlines()]


def _is_protected(path: str, protected: Sequence[str]) -> bool:
    return any(path == p.rstrip("/") or path.startswith(p.rstrip("/") + "/") for p in protected)


async def check_branch(
    ws: Workspace, base: str, protected_paths: Sequence[str], max_file_bytes: int
) -> list[str]:
    """Why the commits since the ``base`` commit must not be pushed: protected paths touched,
    binary or oversized files. Every commit counts (a blob added then deleted is still pushed),
    merges are compared with their first parent, a root commit with the empty tree, and binary
    means a NUL byte, whatever .gitattributes claims."""
    _reclaim(ws)
    _, out = await _ws_git(
        ws, "log", "--format=", "--raw", "--root", "--no-abbrev", "--no-renames",
        "--diff-merges=first-parent", "-z", f"{_commit_id(base)}..HEAD",
    )
    fields = out.decode("utf-8", "replace").split("\0")
    problems: set[str] = set()
    files: dict[str, str] = {}  # path -> blob of a regular file written by some commit
    for meta, path in zip(fields[0::2], fields[1::2], strict=False):  # -z ends with NUL: one field more
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
    _, out = await _ws_git(ws, "cat-file", "--batch-check=%(objectname) %(objectsize)", stdin=query)
    return {sha: int(size) for sha, size in (line.split() for line in out.decode().splitlines())}


async def _binary_blobs(ws: Workspace, shas: set[str]) -> set[str]:
    """Blobs with a NUL byte in their first 8000 bytes, git's own heuristic."""
    if not shas:
        return set()
    _, out = await _ws_git(ws, "cat-file", "--batch", stdin="\n".join(shas).encode() + b"\n")
    binary, pos = set(), 0
    while pos < len(out):
        header_end = out.index(b"\n", pos)
        sha, _, size = out[pos:header_end].decode().split(" ")
        start = header_end + 1
        if b"\0" in out[start : start + min(int(size), 8000)]:
            binary.add(sha)
        pos = start + int(size) + 1
    return binary


# --- project detection and QA ----------------------------------------------------------------


@dataclass(frozen=True)
class Project:
    language: str
    build: tuple[tuple[str, ...], ...]
    test: tuple[tuple[str, ...], ...]


_GO_TEST = ("go", "test", "./...", "-count=1", "-timeout", "120s")
_PROJECTS = (
    ("go.mod", Project("Go", (("go", "build", "./..."), ("go", "vet", "./...")), (_GO_TEST,))),
    ("composer.json", Project(
        "PHP", (("composer", "install", "--no-interaction"),), (("composer", "test"),)
    )),
    ("package.json", Project("JavaScript/TypeScript", (("npm", "install"),), (("npm", "test"),))),
    ("Cargo.toml", Project("Rust", (("cargo", "build"),), (("cargo", "test"),))),
    ("pyproject.toml", Project("Python", (), (("python", "-m", "pytest"),))),
)


def detect_project(repo_dir: Path) -> Project | None:
    """The first project file found at the top of the clone decides; None when there is none."""
    return next((project for name, project in _PROJECTS if (repo_dir / name).is_file()), None)


def qa_commands(settings: Settings, owner: str, repo: str, repo_dir: Path) -> list[list[str]]:
    """Build then test, unless ``settings.qa["owner/repo"]`` says otherwise (an empty list: no QA)."""
    override = settings.qa.get(f"{owner}/{repo}")
    if override is not None:
        return [list(argv) for argv in override]
    project = detect_project(repo_dir)
    return [list(argv) for argv in project.build + project.test] if project else []
