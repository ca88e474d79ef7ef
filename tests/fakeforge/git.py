"""Real bare repositories: plumbing for the fake's own commits, and smart HTTP through ``git http-backend``.

The fake writes commits with plumbing (a throw-away index, ``commit-tree``, ``update-ref``) so it never
needs a work tree. Clones, fetches and pushes from the bot go through the real CGI, so whatever the bot
does to git is checked by git itself. Every git call runs with the user's and system's config switched
off, so a developer's ``~/.gitconfig`` cannot change what the tests see.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from aiohttp import web

logger = logging.getLogger(__name__)
ZERO_SHA = "0" * 40
ISOLATED_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
}
# Gitea checks push permission in its pre-receive hook, not at the HTTP layer (it lowers that check to
# read since it supports proc-receive), and refuses pushes to the refs it manages itself. The fake's
# hook does both; the server tells it whether the pusher may write, and which protected branches
# (rule globs, one a line) the pusher may not push to.
PRE_RECEIVE = """#!/bin/sh
if [ "$FAKEFORGE_CAN_WRITE" != "1" ]; then
  echo "Gitea: User permission denied for writing." >&2
  exit 1
fi
status=0
while read old new ref; do
  case "$ref" in
    refs/pull/*) echo "Gitea: refusing to update $ref: refs/pull/ is managed by the server" >&2; status=1;;
  esac
  branch=${ref#refs/heads/}
  [ "$branch" = "$ref" ] && continue
  printf '%s\\n' "$FAKEFORGE_PROTECTED" | while read -r rule; do
    [ -n "$rule" ] || continue
    case "$branch" in
      $rule) echo "Gitea: Not allowed to push to protected branch $branch" >&2; exit 1;;
    esac
  done || status=1
done
exit $status
"""


class GitError(RuntimeError):
    pass


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, **ISOLATED_ENV, **(extra or {})}


def run(git_dir: Path, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
        check: bool = True) -> str:
    """Run one git command against a bare repository; stdout as text."""
    proc = subprocess.run(["git", f"--git-dir={git_dir}", *args], input=input, capture_output=True,
                          env=_env(env), timeout=60)
    if check and proc.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout.decode(errors="replace")


def init_bare(path: Path, default_branch: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path)],
                   check=True, capture_output=True, env=_env())
    hook = path / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE)
    hook.chmod(0o755)


def clone_bare(source: Path, path: Path) -> None:
    """A fork: a bare copy of the parent with all its branches."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "--quiet", "--bare", str(source), str(path)], check=True,
                   capture_output=True, env=_env())
    hook = path / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE)
    hook.chmod(0o755)


def branches(git_dir: Path) -> dict[str, str]:
    out = run(git_dir, "for-each-ref", "--format=%(objectname) %(refname:lstrip=2)", "refs/heads/")
    return {name: sha for sha, name in (line.split(" ", 1) for line in out.splitlines())}


def resolve_commit(git_dir: Path, rev: str) -> str | None:
    """Full sha of a commit named by a (possibly short) sha, branch or tag; None if there is none."""
    if not rev or rev.startswith("-"):
        return None
    out = run(git_dir, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False)
    return out.strip() or None


def merge_base(git_dir: Path, a: str, b: str) -> str:
    return run(git_dir, "merge-base", a, b, check=False).strip()


@dataclass
class CommitInfo:
    sha: str
    message: str
    author_name: str
    author_email: str
    committer_name: str
    committer_email: str
    timestamp: str  # committer date, strict ISO 8601
    parents: list[str]


def log(git_dir: Path, rev: str, limit: int = 100) -> list[CommitInfo]:
    """Up to ``limit`` commits reachable from ``rev``, newest first, in one git call."""
    fields = "%x1f".join(("%H", "%an", "%ae", "%cn", "%ce", "%cI", "%P", "%B"))
    out = run(git_dir, "log", "-z", f"--max-count={limit}", f"--format={fields}", rev, "--")
    commits = []
    for record in filter(None, out.split("\x00")):
        sha, an, ae, cn, ce, stamp, parents, message = record.split("\x1f")
        commits.append(CommitInfo(sha=sha, author_name=an, author_email=ae, committer_name=cn, committer_email=ce,
                                  timestamp=stamp, parents=parents.split(), message=message.rstrip("\n") + "\n"))
    return commits


def commit_info(git_dir: Path, rev: str) -> CommitInfo:
    return log(git_dir, rev, 1)[0]


def read_file(git_dir: Path, rev: str, path: str) -> bytes | None:
    proc = subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "blob", f"{rev}:{path}"],
                          capture_output=True, env=_env())
    return proc.stdout if proc.returncode == 0 else None


def commit_files(git_dir: Path, branch: str, files: dict[str, str | bytes | None], message: str, *,
                 author: tuple[str, str], when: datetime, parent: str | None, old: str = ZERO_SHA) -> str:
    """Commit ``files`` (None deletes a path) on top of ``parent`` and move ``branch`` from ``old`` to it."""
    stamp = f"{int(when.timestamp())} +0000"
    env = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1], "GIT_AUTHOR_DATE": stamp,
           "GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1], "GIT_COMMITTER_DATE": stamp}
    with tempfile.TemporaryDirectory() as tmp:
        env["GIT_INDEX_FILE"] = str(Path(tmp) / "index")
        if parent:
            run(git_dir, "read-tree", parent, env=env)
        entries = []
        for path, content in files.items():
            if content is None:
                entries.append(f"0 {ZERO_SHA}\t{path}")
                continue
            data = content.encode() if isinstance(content, str) else content
            blob = run(git_dir, "hash-object", "-w", "--stdin", input=data).strip()
            entries.append(f"100644 {blob}\t{path}")
        run(git_dir, "update-index", "--index-info", input=("\n".join(entries) + "\n").encode(), env=env)
        tree = run(git_dir, "write-tree", env=env).strip()
    parents = ["-p", parent] if parent else []
    sha = run(git_dir, "commit-tree", tree, *parents, "-F", "-", input=message.encode(), env=env).strip()
    run(git_dir, "update-ref", f"refs/heads/{branch}", sha, old)
    return sha


def merge(git_dir: Path, branch: str, base_sha: str, head_sha: str, message: str, *,
          author: tuple[str, str], when: datetime) -> str:
    """A merge commit of ``head_sha`` into ``branch`` (at ``base_sha``), without a work tree."""
    tree = run(git_dir, "merge-tree", "--write-tree", base_sha, head_sha).split()[0]
    stamp = f"{int(when.timestamp())} +0000"
    env = {"GIT_AUTHOR_NAME": author[0], "GIT_AUTHOR_EMAIL": author[1], "GIT_AUTHOR_DATE": stamp,
           "GIT_COMMITTER_NAME": author[0], "GIT_COMMITTER_EMAIL": author[1], "GIT_COMMITTER_DATE": stamp}
    sha = run(git_dir, "commit-tree", tree, "-p", base_sha, "-p", head_sha, "-F", "-", input=message.encode(),
              env=env).strip()
    run(git_dir, "update-ref", f"refs/heads/{branch}", sha, base_sha)
    return sha


def fetch_ref(git_dir: Path, source: Path, source_ref: str, dest_ref: str) -> None:
    """Copy a ref (and its objects) from another bare repo, as Gitea does for refs/pull/N/head of forks."""
    run(git_dir, "fetch", "--quiet", "--no-tags", str(source), f"+{source_ref}:{dest_ref}")


def update_ref(git_dir: Path, ref: str, sha: str) -> None:
    run(git_dir, "update-ref", ref, sha)


@dataclass
class FileChange:
    status: str  # Gitea's words: added, deleted, renamed, copied, changed
    filename: str
    previous_filename: str
    additions: int
    deletions: int


_STATUS_WORDS = {"A": "added", "D": "deleted", "R": "renamed", "C": "copied", "M": "changed", "T": "changed"}


def diff_files(git_dir: Path, base: str, head: str) -> list[FileChange]:
    """Per-file changes between the merge base and the head, with rename detection like Gitea's."""
    numstat = run(git_dir, "diff", "--numstat", "-z", "-M", base, head, "--")
    names = run(git_dir, "diff", "--name-status", "-z", "-M", base, head, "--")
    counts: list[tuple[int, int]] = []
    items = numstat.split("\x00")
    i = 0
    while i < len(items) - 1:
        added, deleted, path = items[i].split("\t", 2)
        if path == "":  # a rename: the two paths follow as separate fields
            i += 2
        counts.append((int(added) if added != "-" else 0, int(deleted) if deleted != "-" else 0))
        i += 1
    changes = []
    fields = names.split("\x00")
    i = 0
    while i < len(fields) - 1:
        code = fields[i]
        if code[0] in "RC":
            old, new = fields[i + 1], fields[i + 2]
            i += 3
        else:
            old, new = "", fields[i + 1]
            i += 2
        add, dele = counts[len(changes)]
        changes.append(FileChange(_STATUS_WORDS.get(code[0], "changed"), new, old, add, dele))
    return changes


# --- smart HTTP ----------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _http_backend_path() -> str:
    exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout
    return str(Path(exec_path.strip()) / "git-http-backend")


async def http_backend(request: web.Request, project_root: Path, path_info: str, remote_user: str | None, *,
                       can_write: bool = False, protected: tuple[str, ...] = (),
                       buffered: bool = False) -> web.StreamResponse:
    """Run ``git http-backend`` for one request, streaming the body in and the answer out.

    ``can_write`` and ``protected`` (the branch rules the pusher may not push to) are handed to the
    pre-receive hook. ``buffered`` collects the whole answer into an
    unsent response instead, so the caller can act on the result (a push's ref updates) before the
    client hears back.
    """
    env = _env({
        "GIT_PROJECT_ROOT": str(project_root),
        "GIT_HTTP_EXPORT_ALL": "1",
        "PATH_INFO": path_info,
        "QUERY_STRING": request.query_string,
        "REQUEST_METHOD": request.method,
        "CONTENT_TYPE": request.headers.get("Content-Type", ""),
        "REMOTE_ADDR": request.remote or "127.0.0.1",
        "HTTP_GIT_PROTOCOL": request.headers.get("Git-Protocol", ""),
        "FAKEFORGE_CAN_WRITE": "1" if can_write else "0",
        "FAKEFORGE_PROTECTED": "\n".join(protected),
    })
    if remote_user:
        env["REMOTE_USER"] = remote_user  # also what enables receive-pack in http-backend
    proc = await asyncio.create_subprocess_exec(
        _http_backend_path(), env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    feeder = asyncio.create_task(_feed(request, proc.stdin))
    errors = asyncio.create_task(proc.stderr.read())  # drained concurrently so git never blocks on it
    try:
        status, headers = await _read_cgi_headers(proc.stdout)
        if buffered:
            response: web.StreamResponse = web.Response(status=status, headers=headers,
                                                        body=await proc.stdout.read())
        else:
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            while chunk := await proc.stdout.read(65536):
                await response.write(chunk)
            await response.write_eof()
        await feeder
        await proc.wait()
    except BaseException:
        if proc.returncode is None:
            proc.kill()  # the client went away (or we are shutting down): do not leave git running
        feeder.cancel()
        await proc.wait()
        raise
    finally:
        stderr = await errors
    if proc.returncode:
        logger.warning("git http-backend %s exited %s: %s", path_info, proc.returncode,
                    stderr.decode(errors="replace").strip())
    return response


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    """Stream the request body into the CGI, inflating ``Content-Encoding: gzip`` on the way."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS) if request.headers.get("Content-Encoding") == "gzip" else None
    try:
        async for chunk in request.content.iter_chunked(65536):
            stdin.write(inflate.decompress(chunk) if inflate else chunk)
            await stdin.drain()
        if inflate:
            stdin.write(inflate.flush())
        await stdin.drain()
    except (BrokenPipeError, ConnectionResetError, zlib.error):
        pass  # the backend finished early, or the body is corrupt: git reports either on stdout
    finally:
        stdin.close()


async def _read_cgi_headers(stdout: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status, headers = 200, {}
    while True:
        line = (await stdout.readline()).decode("latin-1").rstrip("\r\n")
        if not line:
            return status, headers
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.strip().split()[0])
        else:
            headers[name.strip()] = value.strip()
