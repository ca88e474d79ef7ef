import asyncio
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import SecretStr

from bot.settings import GitIdentity, Settings
from bot.names import branch_for, branch_key, validate_branch, validate_key, validate_repo
from bot.workspace import (
    GitError,
    Workspaces,
    check_branch,
    clear_blocked,
    commit_leftovers,
    commit_message,
    commits_since,
    detect_project,
    parse_ids,
    qa_commands,
    read_blocked,
    recent_commits,
    remove_workspace,
    write_answer,
)

from bot.workspace.git import git_env, run_git

from .helpers import git, serve

TOKEN = "tok-5f3c1e9a77d24b0c"
IDENTITY = GitIdentity(name="Dispatch Bot", email="bot@example.test")
ROOT = os.geteuid() == 0
def commit(work: Path, files: dict[str, str | bytes], message: str = "change") -> str:
    for name, content in files.items():
        path = work / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    git(work, "add", "--all")
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD")


class Forge:
    """Bare repositories under one directory: a plain-path remote stands in for the Forge."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, owner: str, repo: str, files: dict[str, str] | None = None) -> Path:
        bare = self.root / owner / f"{repo}.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
        work = self.root / "_work" / owner / repo
        git(self.root, "clone", "-q", str(bare), str(work))
        git(work, "checkout", "-q", "-b", "main")
        commit(work, files or {"README.md": f"{owner}/{repo}\n"}, "initial")
        git(work, "push", "-q", "origin", "main")
        return work

    def push(self, work: Path, files: dict[str, str], branch: str = "main") -> str:
        git(work, "checkout", "-q", "-B", branch)
        sha = commit(work, files)
        git(work, "push", "-q", "--force", "origin", branch)
        return sha

    def head(self, owner: str, repo: str, branch: str) -> str:
        return git(self.root / owner / f"{repo}.git", "rev-parse", f"refs/heads/{branch}")


@pytest.fixture
def forge(tmp_path: Path) -> Forge:
    return Forge(tmp_path / "forge")


@pytest.fixture
def widgets(forge: Forge) -> Path:
    return forge.create("acme", "widgets")


@pytest.fixture
def spaces(tmp_path: Path, forge: Forge) -> Workspaces:
    return Workspaces(tmp_path / "data", str(forge.root), SecretStr(TOKEN), IDENTITY, owner="1000:1000")


async def prepare_issue(spaces: Workspaces, branch: str = "agent/fix-it", key: str = "issue-1", owner: str = "acme"):
    return await spaces.prepare(owner, "widgets", key, branch, "main", new_branch=True)


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize("owner, repo", [("acme", "widgets"), ("a-b.c_d", "w.x-y_z"), ("acme", ".profile"), ("A1", "r")])
def test_valid_repo_names(owner, repo):
    validate_repo(owner, repo)


@pytest.mark.parametrize(
    "owner, repo",
    [
        ("acme", "../../etc"), ("..", "widgets"), ("acme", ".."), ("acme", "."), ("acme", "a/../../b"),
        ("/etc", "passwd"), ("acme", "/etc"), ("-rf", "x"), ("acme", "-rf"), ("acme", "a\nb"),
        ("acme", "a\x00b"), ("", "x"), ("acme", ""), ("a/b", "c"), (".hidden", "x"), ("acme", "a b"),
        ("a" * 41, "x"), ("acme", "r" * 101), ("acme", "wïdgets"),
    ],
)
def test_invalid_repo_names(owner, repo):
    with pytest.raises(ValueError, match="invalid"):
        validate_repo(owner, repo)


@pytest.mark.parametrize("name", ["main", "agent/fix-it", "feature/a.b_c", "release-1.2", "ünïcode"])
def test_valid_branches(name):
    assert validate_branch(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-rf", "--force", "a..b", "../../etc", "a/../../b", "/abs", "a b", "a\nb", "a\tb", "a\x00b", "HEAD",
     "@", "@{-1}", "x@{u}", "x.lock", "a//b", "a/", "a.", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b",
     "x" * 201, "a\x7fb"],
)
def test_invalid_branches(name):
    with pytest.raises(ValueError, match="invalid branch name"):
        validate_branch(name)


@pytest.mark.parametrize("key", ["../x", ".meta", "a/b", "", "-x", "a\x00", "x" * 101])
def test_invalid_keys(key):
    with pytest.raises(ValueError):
        validate_key(key)


def test_existing_validates_everything_before_building_a_path(spaces):
    for args in [
        ("..", "widgets", "issue-1", "b", "main"),
        ("acme", "../../etc", "issue-1", "b", "main"),
        ("acme", "widgets", "../../../tmp", "b", "main"),
        ("acme", "widgets", "issue-1", "../x", "main"),
        ("acme", "widgets", "issue-1", "b", "-rf"),
    ]:
        with pytest.raises(ValueError):
            spaces.existing(*args)


BRANCH_CORPUS = [
    "main", "agent/fix-it", "a.b", "a/.b", ".a", "a/b.lock", "a.lock/b", "a..b", "a/./b", "a/b/", "a@b", "a@{b",
    "@", "HEAD", "-a", "a-", "a_b", "a b", "a\tb", "a~b", "a^b", "a:b", "a?b", "a*b", "a[b", "a]b", "a\\b",
    "a{b}", "a!b", "a#b", "a$b", "a%b", "a&b", "a(b)", "a+b", "a,b", "a;b", "a<b>", "a=b", "a|b", "a'b", 'a"b',
    "a`b", "ünïcode", "日本", "a//b", "/a", "a.", "a/b.", "refs/heads/x", "x.lock.y", "a@", "@a", "a/@/b",
]


# Names git takes that the bot refuses on purpose: HEAD's shorthand, any whitespace, very long names.
STRICTER_THAN_GIT = ["@", "a\u00a0b", "x" * 201]


def test_branch_rules_agree_with_git():
    """The rules are checked without starting git (the event loop must not wait for a process);
    real git is the reference they must match."""
    for name in BRANCH_CORPUS + STRICTER_THAN_GIT:
        reference = subprocess.run(["git", "check-ref-format", "--branch", name], capture_output=True, cwd="/")
        try:
            validate_branch(name)
            ours = True
        except ValueError:
            ours = False
        assert ours == (reference.returncode == 0 and name not in STRICTER_THAN_GIT), name


async def longest_stall(work) -> float:
    """The longest the event loop went unanswered while ``work`` ran."""
    gaps = [0.0]

    async def beat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.001)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()

    task = asyncio.create_task(beat())
    await asyncio.sleep(0.01)
    try:
        await work
        await asyncio.sleep(0.01)  # the beat after the work tells how long it waited
    finally:
        task.cancel()
    return max(gaps)


async def test_checking_branch_names_never_blocks_the_event_loop():
    async def check_new_names() -> None:
        for n in range(100):
            validate_branch(f"agent/task-{n}-{time.time()}")  # each name new: no cache helps

    assert await longest_stall(check_new_names()) < 0.05


def test_keys_and_branch_names():
    assert branch_key("a/b") != branch_key("a-b")
    assert validate_key(branch_key("feature/x")) and branch_key("feature/x").startswith("branch-feature-x-")
    assert branch_for("Fix the flaky test in CI!", 4) == "agent/fix-the-flaky-test-in-ci"
    assert branch_for("🙂 ✨", 4) == "agent/issue-4"
    long = branch_for("make " * 30, 1)
    assert len(long.removeprefix("agent/")) <= 40 and not long.endswith("-")


def test_parse_ids():
    assert parse_ids("1000:1001") == (1000, 1001)
    assert parse_ids("1000") == (1000, 1000)
    for bad in ("node", "1000:staff", "", ":1"):
        with pytest.raises(ValueError):
            parse_ids(bad)


@pytest.mark.parametrize(
    "task, message",
    [
        ("fix the flaky test", "fix: the flaky test"),
        ("Fix: crash on start", "fix: crash on start"),
        ("the login page crashes with an error", "fix: the login page crashes with an error"),
        ("add dark mode", "feat: add dark mode"),
        ("document the API", "docs: document the API"),
        ("add tests for the parser", "test: add tests for the parser"),
        ("refactor the store", "refactor: the store"),
        ("feat(ui): add dark mode", "feat(ui): add dark mode"),
        ("  add\n  dark\tmode ", "feat: add dark mode"),
        ("", "feat: changes by the agent"),
    ],
)
def test_commit_message(task, message):
    assert commit_message(task) == message


def test_commit_message_fits_72_chars():
    message = commit_message("implement " + "a very long feature description " * 5)
    assert len(message) <= 72 and message.startswith("feat: ") and message.endswith("...")


# --- prepare ---------------------------------------------------------------------------------


async def test_prepare_new_branch_from_default(spaces, widgets, forge, tmp_path):
    ws = await prepare_issue(spaces)
    assert ws.root == tmp_path / "data" / "workspaces" / "acme" / "widgets" / "issue-1"
    assert (ws.clone / "README.md").read_text() == "acme/widgets\n"
    assert git(ws.clone, "symbolic-ref", "--short", "HEAD") == "agent/fix-it"
    assert git(ws.clone, "rev-parse", "HEAD") == forge.head("acme", "widgets", "main")
    assert git(ws.clone, "remote", "get-url", "origin") == f"{forge.root}/acme/widgets.git"
    assert git(ws.clone, "config", "user.email") == IDENTITY.email  # the agent commits as the bot
    assert not (ws.clone / ".git" / "objects" / "info" / "alternates").exists()
    assert "/BLOCKED.md" in (ws.clone / ".git" / "info" / "exclude").read_text()
    assert ws.meta.is_dir()
    assert (tmp_path / "data" / "mirrors" / "acme" / "widgets.git" / "HEAD").is_file()


@pytest.mark.skipif(not ROOT, reason="chown needs root")
async def test_prepare_hands_the_workspace_to_the_container_user(spaces, widgets):
    ws = await prepare_issue(spaces)
    for path in (ws.clone, ws.meta, ws.clone / "README.md", ws.clone / ".git" / "HEAD", ws.clone / ".git" / "objects"):
        assert (path.stat().st_uid, path.stat().st_gid) == (1000, 1000), path
    assert ws.root.stat().st_uid == 0  # the agent cannot swap repo/ or .meta/ for symlinks
    shared = [p for p in (ws.clone / ".git" / "objects").rglob("*") if p.is_file() and p.stat().st_nlink > 1]
    assert shared and all(p.stat().st_uid == 0 for p in shared)  # hardlinks into the mirror stay root's


async def test_clone_is_self_contained(spaces, widgets, tmp_path):
    ws = await prepare_issue(spaces)
    shutil.rmtree(tmp_path / "data" / "mirrors")
    git(ws.clone, "fsck", "--no-progress")
    assert git(ws.clone, "log", "--format=%s") == "initial"


async def test_same_key_in_two_owners_never_shares_a_workspace(spaces, forge):
    forge.create("acme", "widgets", {"who": "acme"})
    forge.create("other", "widgets", {"who": "other"})
    a = await prepare_issue(spaces, owner="acme")
    b = await prepare_issue(spaces, owner="other")
    assert a.root != b.root and a.clone != b.clone
    assert (a.clone / "who").read_text() == "acme" and (b.clone / "who").read_text() == "other"
    assert git(b.clone, "remote", "get-url", "origin").endswith("/other/widgets.git")


async def test_existing_forge_branch_is_checked_out(spaces, widgets, forge):
    sha = forge.push(widgets, {"wip.txt": "earlier run"}, branch="agent/fix-it")
    ws = await prepare_issue(spaces)
    assert git(ws.clone, "rev-parse", "HEAD") == sha
    assert (ws.clone / "wip.txt").read_text() == "earlier run"


async def test_pull_request_runs_on_its_head_branch(spaces, widgets, forge):
    sha = forge.push(widgets, {"feature.txt": "x"}, branch="feature/x")
    ws = await spaces.prepare("acme", "widgets", "pr-2", "feature/x", "main", new_branch=False)
    assert git(ws.clone, "rev-parse", "HEAD") == sha
    with pytest.raises(ValueError, match="does not exist"):
        await spaces.prepare("acme", "widgets", "pr-3", "gone", "main", new_branch=False)


async def test_resume_keeps_local_commits(spaces, widgets, forge):
    ws = await prepare_issue(spaces)
    local = commit(ws.clone, {"agent.txt": "work"})
    forge.push(widgets, {"other.txt": "meanwhile on main"})
    again = await prepare_issue(spaces)
    assert again == ws
    assert git(ws.clone, "rev-parse", "HEAD") == local
    assert git(ws.clone, "rev-parse", "origin/main") == forge.head("acme", "widgets", "main")


async def test_resume_fast_forwards_to_the_forge(spaces, widgets, forge):
    forge.push(widgets, {"a": "1"}, branch="feature/x")
    ws = await spaces.prepare("acme", "widgets", "pr-2", "feature/x", "main", new_branch=False)
    newer = forge.push(widgets, {"b": "2"}, branch="feature/x")
    await spaces.prepare("acme", "widgets", "pr-2", "feature/x", "main", new_branch=False)
    assert git(ws.clone, "rev-parse", "HEAD") == newer


async def test_concurrent_prepares_share_one_mirror(spaces, widgets):
    one, two = await asyncio.gather(
        prepare_issue(spaces, key="issue-1", branch="agent/one"), prepare_issue(spaces, key="issue-2", branch="agent/two")
    )
    assert (one.clone / "README.md").exists() and (two.clone / "README.md").exists()


async def test_git_failure_is_a_git_error(spaces):
    with pytest.raises(GitError, match="git clone --mirror"):
        await spaces.tag_commit("acme", "missing", "v1")  # the mirror is cloned first


# --- the token -------------------------------------------------------------------------------


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle in p.read_bytes()]


async def test_token_never_lands_in_a_file(spaces, widgets, forge, tmp_path):
    ws = await prepare_issue(spaces)
    (ws.clone / "new.txt").write_text("agent output\n")
    assert await commit_leftovers(ws, "feat: new file", IDENTITY)
    pushed = await spaces.push(ws, ws.branch)
    await prepare_issue(spaces)  # resume path too
    assert forge.head("acme", "widgets", "agent/fix-it") == pushed == git(ws.clone, "rev-parse", "HEAD")
    assert files_containing(tmp_path / "data", TOKEN.encode()) == []


async def test_token_travels_as_a_header_only(tmp_path):
    """Against HTTP: the header arrives, and neither the URL nor git's error message holds the token."""
    seen: list[tuple[str, str | None]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append((str(request.rel_url), request.headers.get("Authorization")))
        return web.Response(status=404)

    runner, url = await serve(_app(handler))
    try:
        spaces = Workspaces(tmp_path / "data", url, SecretStr(TOKEN), IDENTITY)
        with pytest.raises(GitError) as err:
            await spaces.tag_commit("acme", "widgets", "v1")  # the mirror is cloned first
    finally:
        await runner.cleanup()
    assert seen and all(auth == f"token {TOKEN}" for _, auth in seen)
    assert all(TOKEN not in url for url, _ in seen)
    assert TOKEN not in str(err.value) and TOKEN not in " ".join(err.value.argv)


def _app(handler) -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


# --- harvest ---------------------------------------------------------------------------------


async def test_commit_leftovers(spaces, widgets):
    ws = await prepare_issue(spaces)
    assert not await commit_leftovers(ws, "feat: nothing", IDENTITY)
    (ws.clone / "src.py").write_text("print('hi')\n")
    (ws.clone / "BLOCKED.md").write_text("which database?")
    write_answer(ws, "postgres")
    assert await commit_leftovers(ws, "feat: add src", IDENTITY)
    assert git(ws.host_git, "log", "-1", "--format=%s|%an|%ae|%cn") == "feat: add src|Dispatch Bot|bot@example.test|Dispatch Bot"
    assert git(ws.host_git, "show", "--name-only", "--format=", "HEAD").split() == ["src.py"]


async def test_agent_hooks_and_config_never_run_host_side(spaces, widgets, tmp_path):
    ws = await prepare_issue(spaces)
    marker = tmp_path / "pwned"
    for name in ("pre-commit", "post-commit", "pre-push", "reference-transaction", "post-checkout"):
        hook = ws.clone / ".git" / "hooks" / name
        hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
        hook.chmod(0o755)
    config = ws.clone / ".git" / "config"
    config.write_text(config.read_text() + f'[core]\n\tfsmonitor = "touch {marker}"\n\thooksPath = .git/hooks\n'
                      f'[filter "x"]\n\tclean = "touch {marker}"\n[url "http://evil.test/"]\n\tinsteadOf = {spaces.forge_url}\n')
    (ws.clone / ".gitattributes").write_text("* filter=x\n")
    (ws.clone / "f.txt").write_text("x")
    assert await commit_leftovers(ws, "feat: x", IDENTITY)
    await spaces.push(ws, ws.branch)
    await prepare_issue(spaces)
    assert not marker.exists()
    assert "evil" not in (ws.clone / ".git" / "config").read_text()
    assert list((ws.clone / ".git" / "hooks").iterdir()) == []


HOOKS = ("pre-commit", "commit-msg", "post-commit", "pre-push", "post-checkout", "post-merge", "reference-transaction",
         "post-index-change", "pre-auto-gc", "fsmonitor-watchman", "push-to-checkout", "post-rewrite")


def evil_git_dir(git_dir: Path, marker: str) -> str:
    """Plant every way a git dir can name a command for host git to run, each touching
    ``marker-<kind>``; returns the config text, which the caller keeps writing back."""
    hooks = git_dir / "evil-hooks"
    for where in (git_dir / "hooks", hooks):
        where.mkdir(exist_ok=True)
        for name in HOOKS:
            (where / name).write_text(f"#!/bin/sh\ntouch {marker}-hook-{name}\n")
            (where / name).chmod(0o755)
    (git_dir / "info").mkdir(exist_ok=True)
    (git_dir / "info" / "attributes").write_text("* filter=x diff=x merge=x\n")
    (git_dir / "evil.inc").write_text(f"[log]\n\tshowSignature = true\n[gpg]\n\tprogram = touch {marker}-gpg\n")
    def command(kind: str, then: str = "true") -> str:
        return f'"touch {marker}-{kind}; {then}"'
    return (
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n"
        f"\tfsmonitor = {command('fsmonitor')}\n\tsshCommand = {command('ssh', 'false')}\n"
        f"\tpager = {command('pager', 'cat')}\n\taskPass = {command('askpass')}\n\thooksPath = {hooks}\n"
        f"\talternateRefsCommand = {command('alternate-refs')}\n\teditor = {command('editor')}\n"
        '[url "ssh://pwn.invalid/x"]\n\tinsteadOf = /\n'
        f'[filter "x"]\n\tclean = {command("clean", "cat")}\n\tsmudge = {command("smudge", "cat")}\n'
        f'\tprocess = {command("process", "false")}\n'
        f'[diff "x"]\n\tcommand = {command("diff")}\n\ttextconv = {command("textconv", "cat")}\n'
        f'[merge "x"]\n\tdriver = {command("merge", "false")}\n'
        f'[credential]\n\thelper = "!touch {marker}-credential"\n'
        "[include]\n\tpath = evil.inc\n"
    )


def signed(clone: Path) -> None:
    """Make HEAD a commit with a (fake) signature, which ``log.showSignature`` would hand to gpg."""
    body = git(clone, "cat-file", "commit", "HEAD")
    head, _, message = body.partition("\n\n")
    sig = "gpgsig -----BEGIN PGP SIGNATURE-----\n \n iQEzBAABCAAdFiEE\n -----END PGP SIGNATURE-----"
    obj = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(clone), "hash-object", "-t", "commit", "-w", "--stdin"],
                         input=f"{head}\n{sig}\n\n{message}\n", capture_output=True, text=True, check=True)
    git(clone, "update-ref", "HEAD", obj.stdout.strip())


async def test_a_git_dir_rewritten_while_host_git_runs_makes_it_run_nothing(spaces, widgets, tmp_path):
    """A container still writing while the host runs git (a QA process that ignores SIGTERM): the
    agent keeps putting its config back, hooks, attributes and include files in place. Every
    host-side step of a harvest and the next prepare: no command the agent named ever runs."""
    ws = await prepare_issue(spaces)
    commit(ws.clone, {"a.txt": "one\n", ".gitattributes": "* filter=x diff=x merge=x\n"})
    signed(ws.clone)
    (ws.clone / "b.txt").write_text("left over\n")
    marker = str(tmp_path / "pwned")
    git_dir = ws.clone / ".git"
    config = evil_git_dir(git_dir, marker)
    stop = threading.Event()

    def keep_planting() -> None:
        while not stop.is_set():
            try:
                tmp = git_dir / "config.evil"
                tmp.write_text(config)
                os.replace(tmp, git_dir / "config")
            except OSError:
                pass  # the bot replaced the whole .git meanwhile: plant in the new one
            time.sleep(0.0005)

    planter = threading.Thread(target=keep_planting)
    planter.start()
    failure = None
    try:
        await spaces.take_in(ws)
        assert await commit_leftovers(ws, "feat: left over", IDENTITY)
        base = await spaces.base_commit(ws)
        assert len(await commits_since(ws, base)) == 2
        assert await check_branch(ws, base, [], 1000) == []
        await spaces.push(ws, ws.branch)
        await prepare_issue(spaces)  # the next run's prepare: sync and checkout
        assert "left over" in await recent_commits(ws.host_git)
    except GitError as e:  # the markers say more than the git command that failed
        failure = e
    finally:
        stop.set()
        planter.join()
    assert sorted(p.name for p in tmp_path.glob("pwned-*")) == []
    assert failure is None, failure


@pytest.mark.parametrize(
    "plant",
    [
        lambda git_dir: (git_dir / "refs" / "heads" / "evil").symlink_to("/etc/passwd"),
        lambda git_dir: (git_dir / "objects" / "info" / "alternates").write_text("/somewhere/else/objects\n"),
        lambda git_dir: (git_dir / "commondir").write_text("/somewhere/else\n"),
        lambda git_dir: (git_dir / "shallow").write_text("0" * 40 + "\n"),
        lambda git_dir: (git_dir / "info" / "grafts").write_text("0" * 40 + "\n"),
        lambda git_dir: (git_dir / "objects" / "ab").symlink_to("/etc"),
    ],
)
async def test_indirections_in_the_agents_git_dir_are_never_followed(spaces, widgets, forge, plant):
    """Only the agent's object files and its HEAD's commit are taken in: what else it plants in
    .git names nothing host git reads."""
    ws = await prepare_issue(spaces)
    base = await spaces.base_commit(ws)
    sha = commit(ws.clone, {"a.txt": "one\n"})
    plant(ws.clone / ".git")
    await spaces.take_in(ws)
    assert await check_branch(ws, base, [], 1000) == []
    assert await spaces.push(ws, ws.branch) == sha == forge.head("acme", "widgets", ws.branch)


async def test_a_symlink_for_the_agents_git_dir_is_not_followed(spaces, widgets, tmp_path):
    ws = await prepare_issue(spaces)
    before = git(ws.host_git, "rev-parse", "HEAD")
    commit(ws.clone, {"a.txt": "one\n"})
    os.rename(ws.clone / ".git", tmp_path / "moved")
    (ws.clone / ".git").symlink_to(tmp_path / "moved")
    await spaces.take_in(ws)
    assert git(ws.host_git, "rev-parse", "HEAD") == before


async def test_base_commit_comes_from_the_mirror_not_the_clone(spaces, widgets, forge):
    ws = await prepare_issue(spaces)
    commit(ws.clone, {".forgejo/workflows/ci.yml": "on: push"})
    # the agent moves every ref that could name the base onto its own commit
    git(ws.clone, "update-ref", "refs/remotes/origin/main", "HEAD")
    git(ws.clone, "tag", "main")
    await spaces.take_in(ws)
    base = await spaces.base_commit(ws)
    assert base == forge.head("acme", "widgets", "main")
    assert await check_branch(ws, base, [".forgejo/workflows/"], 1000) == ["protected path changed: .forgejo/workflows/ci.yml"]
    with pytest.raises(ValueError, match="full commit id"):
        await check_branch(ws, "origin/main", [], 1000)


async def test_base_commit_prefers_the_forge_branch(spaces, widgets, forge):
    pushed = forge.push(widgets, {"x": "1"}, branch="agent/fix-it")
    ws = await prepare_issue(spaces)
    assert await spaces.base_commit(ws) == pushed


async def test_check_branch_reports_every_violation(spaces, widgets):
    ws = await prepare_issue(spaces)
    base = await spaces.base_commit(ws)
    assert await check_branch(ws, base, [".forgejo/workflows/"], 100) == []
    commit(ws.clone, {"ok.txt": "fine\n", "big.txt": "x" * 101, "img.png": b"\x89PNG\r\n\x1a\n\x00\x00"})
    commit(ws.clone, {".forgejo/workflows/ci.yml": "on: push\n", "Makefile": "all:\n"})
    commit(ws.clone, {".gitattributes": "*.dat text diff\n", "blob.dat": b"a\x00b"})  # attributes cannot hide binaries
    git(ws.clone, "rm", "-q", "img.png")
    git(ws.clone, "commit", "-q", "-m", "remove it again")  # still in the pushed history
    await spaces.take_in(ws)
    assert await check_branch(ws, base, [".forgejo/workflows/", "Makefile"], 100) == [
        "binary file: blob.dat",
        "binary file: img.png",
        "file over 100 bytes: big.txt (101 bytes)",
        "protected path changed: .forgejo/workflows/ci.yml",
        "protected path changed: Makefile",
    ]


async def test_check_branch_sees_changes_in_merges(spaces, widgets):
    ws = await prepare_issue(spaces)
    base = await spaces.base_commit(ws)
    git(ws.clone, "checkout", "-q", "-b", "side")
    commit(ws.clone, {"side.txt": "s"})
    git(ws.clone, "checkout", "-q", "agent/fix-it")
    commit(ws.clone, {"main.txt": "m"})
    git(ws.clone, "merge", "-q", "--no-ff", "--no-commit", "side")
    (ws.clone / ".gitea" / "workflows").mkdir(parents=True)
    (ws.clone / ".gitea" / "workflows" / "evil.yml").write_text("on: push")  # an evil merge
    git(ws.clone, "add", "--all")
    git(ws.clone, "commit", "-q", "-m", "merge")
    await spaces.take_in(ws)
    assert await check_branch(ws, base, [".gitea/workflows/"], 1000) == ["protected path changed: .gitea/workflows/evil.yml"]


async def test_commits_since(spaces, widgets):
    ws = await prepare_issue(spaces)
    base = await spaces.base_commit(ws)
    assert await commits_since(ws, base) == []
    first = commit(ws.clone, {"a": "1"}, "feat: one")
    second = commit(ws.clone, {"b": "2"}, "fix: two")
    await spaces.take_in(ws)
    assert await commits_since(ws, base) == [(first, "feat: one"), (second, "fix: two")]


async def test_taking_a_large_git_dir_back_never_blocks_the_event_loop(spaces, widgets):
    ws = await prepare_issue(spaces)
    base = await spaces.base_commit(ws)
    junk = ws.clone / ".git" / "objects" / "ab"  # as many entries as a big repository's loose objects
    junk.mkdir(exist_ok=True)
    for n in range(4000):
        os.close(os.open(junk / f"{n:038x}", os.O_CREAT | os.O_WRONLY))
    assert await longest_stall(spaces.take_in(ws)) < 0.05
    assert await commits_since(ws, base) == []


async def test_push_is_never_forced(spaces, widgets, forge):
    ws = await prepare_issue(spaces)
    commit(ws.clone, {"a": "1"})
    await spaces.take_in(ws)
    await spaces.push(ws, ws.branch)
    forge.push(widgets, {"theirs": "x"}, branch="agent/fix-it")
    commit(ws.clone, {"b": "2"})
    await spaces.take_in(ws)
    with pytest.raises(GitError, match="rejected"):
        await spaces.push(ws, ws.branch)


# --- BLOCKED.md and ANSWER.md ----------------------------------------------------------------


async def test_blocked_and_answer_files(spaces, widgets, tmp_path):
    ws = await prepare_issue(spaces)
    assert read_blocked(ws) is None
    (ws.clone / "BLOCKED.md").write_text("  \n")
    assert read_blocked(ws) is None
    (ws.clone / "BLOCKED.md").write_text("Which database should I use?\n")
    assert read_blocked(ws) == "Which database should I use?"
    clear_blocked(ws)
    clear_blocked(ws)
    assert read_blocked(ws) is None
    write_answer(ws, "Postgres.")
    assert (ws.clone / "ANSWER.md").read_text() == "Postgres."
    assert git(ws.clone, "status", "--porcelain") == ""  # both are excluded from commits


async def test_planted_symlinks_and_fifos_are_not_followed(spaces, widgets, tmp_path):
    ws = await prepare_issue(spaces)
    secret = tmp_path / "host-secret"
    secret.write_text("root password")
    (ws.clone / "BLOCKED.md").symlink_to(secret)
    assert read_blocked(ws) is None
    (ws.clone / "ANSWER.md").symlink_to(secret)
    write_answer(ws, "overwritten?")
    assert secret.read_text() == "root password"
    assert not (ws.clone / "ANSWER.md").is_symlink()
    clear_blocked(ws)
    os.mkfifo(ws.clone / "BLOCKED.md")
    assert read_blocked(ws) is None  # and does not hang


# --- listing and removal ---------------------------------------------------------------------


async def test_list_and_remove_workspaces(spaces, forge):
    forge.create("acme", "widgets")
    forge.create("other", "widgets")
    a = await prepare_issue(spaces, owner="acme")
    b = await prepare_issue(spaces, owner="other", key="issue-9")
    found = spaces.all()
    assert found[0].meta == a.meta
    assert [(w.owner, w.repo, w.key, w.root) for w in found] == [
        ("acme", "widgets", "issue-1", a.root),
        ("other", "widgets", "issue-9", b.root),
    ]
    await remove_workspace(found[0])
    await remove_workspace(found[0])
    assert not a.root.exists() and b.root.exists()
    assert [w.key for w in spaces.all()] == ["issue-9"]


# --- project detection and QA ----------------------------------------------------------------


@pytest.mark.parametrize(
    "marker, language, qa",
    [
        ("go.mod", "Go", [["go", "build", "./..."], ["go", "vet", "./..."], ["go", "test", "./...", "-count=1", "-timeout", "120s"]]),
        ("composer.json", "PHP", [["composer", "install", "--no-interaction"], ["composer", "test"]]),
        ("package.json", "JavaScript/TypeScript", [["npm", "install"], ["npm", "test"]]),
        ("Cargo.toml", "Rust", [["cargo", "build"], ["cargo", "test"]]),
        ("pyproject.toml", "Python", [["python", "-m", "pytest"]]),
    ],
)
def test_detect_project_and_qa(tmp_path, marker, language, qa):
    (tmp_path / marker).write_text("{}")
    assert detect_project(tmp_path).language == language
    assert qa_commands(Settings(_env_file=None), "acme", "widgets", tmp_path) == qa


def test_qa_override_and_nothing_detected(tmp_path):
    (tmp_path / "go.mod").write_text("module x")
    settings = Settings(_env_file=None, qa={"acme/widgets": [["make", "check"]], "acme/none": []})
    assert qa_commands(settings, "acme", "widgets", tmp_path) == [["make", "check"]]
    assert qa_commands(settings, "acme", "none", tmp_path) == []
    assert detect_project(tmp_path / "missing") is None
    assert qa_commands(settings, "acme", "x", tmp_path / "missing") == []


def test_first_project_file_wins(tmp_path):
    (tmp_path / "package.json").write_text("{}")
    (tmp_path / "go.mod").write_text("module x")
    assert detect_project(tmp_path).language == "Go"


def test_from_settings(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path, forge_url="https://forge.test/", forge_token="t")
    spaces = Workspaces.from_settings(settings)
    assert spaces.url("acme", "widgets") == "https://forge.test/acme/widgets.git"
    assert spaces.owner_ids == ((1000, 1000) if ROOT else None)
    with pytest.raises(ValueError, match="forge_url"):
        Workspaces.from_settings(Settings(_env_file=None))
    assert Workspaces(tmp_path, "https://forge.test").owner_ids is None


async def test_host_git_sees_no_key_of_the_bot_and_no_system_config(tmp_path, monkeypatch):
    """What git (and anything it could start) gets from the bot: no key, no token, no system or
    user config (this machine's /etc/gitconfig names a credential helper, for one)."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-not-for-git")
    monkeypatch.setenv("DISPATCHBOT_FORGE_TOKEN", "tok-not-for-git")
    system = tmp_path / "gitconfig"
    system.write_text("[user]\n\tname = from-the-system\n")
    monkeypatch.setenv("GIT_CONFIG_SYSTEM", str(system))
    env = git_env()
    assert not {"OPENAI_API_KEY", "DISPATCHBOT_FORGE_TOKEN", "GIT_CONFIG_SYSTEM"} & set(env)
    _, out = await run_git(["git", "config", "--show-origin", "--list"], ok=(0, 1))
    assert b"from-the-system" not in out and b"credential" not in out


@pytest.mark.parametrize("stderr, waits", [
    ("fatal: unable to access 'http://f/a.git/': Failed to connect to f port 80: Couldn't connect to server", True),
    ("fatal: unable to access 'http://f/a.git/': Empty reply from server", True),
    ("error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502", True),
    (" ! [remote rejected] x -> x (pre-receive hook declined)\nremote: Not allowed to push to protected branch x", False),
    (" ! [rejected]        x -> x (non-fast-forward)", False),
    ("fatal: unable to access 'http://f/a.git/': The requested URL returned error: 403", False),
])
def test_a_push_waits_for_a_forge_that_gave_no_answer_never_for_one_that_refused(stderr, waits):
    from bot.workspace.clones import no_answer
    from bot.workspace.git import GitError

    assert no_answer(GitError(["git", "push"], 1, stderr.encode())) is waits
    assert no_answer(GitError(["git", "push"], None, b"no result after 900s"))
