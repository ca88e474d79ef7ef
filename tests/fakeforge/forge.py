"""``FakeForge``: the one object integration tests hold.

Set-up helpers are plain methods (users, repos, permissions, hooks). Actions performed *as a user*
(open an issue, comment, label, open a pull, push) are coroutines that go through the same service
layer as the REST API and return once every webhook they caused has been answered, so a test knows
the bot has acknowledged. Query helpers read the fake's state directly, for assertions.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Iterable

from . import git, spec
from .faults import InjectedFault, OUTAGE_MODES, Faults
from .gojson import marshal_indent
from .hooks import Deliverer, Delivery, delivery_headers
from .render import JSON, Site
from .server import ForgeServer, RequestRecord, Violation
from .service import Service
from .state import (
    Access, Comment, Hook, Issue, Label, Pull, Reaction, Repo, Review, State, Status, Stopwatch, TrackedTime, User,
)


class FakeForge:
    """A Gitea 1.26 (or Forgejo 15) stand-in on 127.0.0.1: REST API, smart HTTP git, real webhooks."""

    def __init__(self, root: Path | str, *, forgejo: bool = False) -> None:
        self.root = Path(root)
        self.forgejo = forgejo
        self.state = State(self.root)
        self.site = Site(forgejo=forgejo)
        self._deliverer = Deliverer(forgejo)
        self._faults = Faults()
        self.svc = Service(self.state, self.site, self._deliverer)
        self.server = ForgeServer(self.svc, spec.load(forgejo), self._faults)
        self._outage_end: asyncio.TimerHandle | None = None

    # --- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind 127.0.0.1 on a free port."""
        port = await self.server.start()
        self.site.app_url = f"http://127.0.0.1:{port}/"

    async def close(self) -> None:
        if self._outage_end is not None:
            self._outage_end.cancel()
        await self.server.close()
        await self._deliverer.close()

    async def __aenter__(self) -> FakeForge:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, no trailing slash."""
        return self.site.app_url.rstrip("/")

    # --- set-up --------------------------------------------------------------------------------------

    def add_user(self, login: str, *, admin: bool = False, full_name: str = "", email: str | None = None,
                 scopes: Iterable[str] | None = None) -> User:
        """A user with an access token (``.token``; ``scopes`` None means an all-powerful token)."""
        fields: dict[str, object] = {"is_admin": admin, "full_name": full_name}
        if email is not None:
            fields["email"] = email
        if scopes is not None:
            fields["scopes"] = frozenset(scopes)
        return self.state.add_user(login, **fields)

    def add_org(self, login: str, *, full_name: str = "") -> User:
        return self.state.add_user(login, is_org=True, full_name=full_name)

    def add_repo(self, owner: str, name: str, files: dict[str, str | bytes] | None = None, *,
                 default_branch: str = "main", private: bool = False, description: str = "") -> Repo:
        """A bare repo with one initial commit of ``files``; an unknown owner becomes an organisation."""
        owner_user = self.state.find_user(owner) or self.add_org(owner)
        return self.svc.create_repo(owner_user, name, dict(files or {}), default_branch=default_branch,
                                    private=private, description=description)

    def fork_repo(self, repo: Repo, owner: User) -> Repo:
        """``owner``'s fork of ``repo`` (same name), with all of the parent's branches."""
        return self.svc.create_repo(owner, repo.name, {}, default_branch=repo.default_branch, parent=repo,
                                    description=repo.description)

    def set_permission(self, repo: Repo, login: str, level: str) -> None:
        """Collaborator access: none, read, write, admin (or owner, like an org owner)."""
        user = self._user(login)
        repo.collaborators[user.id] = Access.parse(level)

    def protect_branch(self, repo: Repo, rule: str, *, push_allowlist: Iterable[str] = ()) -> None:
        """A branch protection rule (a name or a glob), as repository settings make it: pushing is
        disabled, or allowed to the logins in ``push_allowlist`` alone."""
        repo.protections[rule] = frozenset(push_allowlist)

    def add_label(self, repo: Repo, name: str, color: str = "ee0701", *, description: str = "",
                  exclusive: bool = False, org: bool = False) -> Label:
        """A repo label, or (``org=True``) a label of the repo's organisation."""
        if org:
            return self.state.add_label(None, name, color, org=repo.owner, description=description,
                                        exclusive=exclusive)
        return self.state.add_label(repo, name, color, description=description, exclusive=exclusive)

    def delete_label(self, repo: Repo, name: str) -> None:
        """A maintainer deletes a repo label; like Gitea, it leaves every issue that had it."""
        [label] = [lb for lb in self.state.repo_labels(repo) if lb.name == name]
        del self.state.labels[label.id]
        for issue in self.state.issues.values():
            issue.labels = [lb for lb in issue.labels if lb is not label]

    def add_hook(self, repo: Repo, url: str, secret: str = "", *, events: Iterable[str] | None = None,
                 authorization: str | None = None) -> Hook:
        """A JSON repo webhook; ``events`` limits it to those event types (default: everything)."""
        hook = Hook(id=self.state.next_id("hook"), repo=repo, url=url, secret=secret,
                    events=frozenset(events) if events is not None else None, authorization=authorization)
        self.state.hooks.append(hook)
        return hook

    def set_time_tracking(self, repo: Repo, enabled: bool) -> None:
        repo.time_tracking = enabled

    def lock_issue(self, repo: Repo, number: int, locked: bool = True) -> None:
        self.issue(repo, number).is_locked = locked

    def advance_clock(self, seconds: float) -> None:
        """Move the fake's clock (stopwatches, timestamps) forward without sleeping."""
        self.state.clock.advance(seconds)

    def freeze_clock(self) -> None:
        """Stop the fake's clock at this second: what follows happens within one second, as Gitea sees it."""
        self.state.clock.freeze()

    # --- actions as a user (webhooks answered before they return) -----------------------------------

    async def create_issue(self, repo: Repo, author: User, title: str, body: str = "",
                           labels: Iterable[str] = ()) -> Issue:
        issue, deliveries = self.svc.create_issue(repo, author, title, body, self._labels(repo, labels))
        await self._answered(deliveries)
        return issue

    async def create_comment(self, repo: Repo, number: int, author: User, body: str) -> Comment:
        comment, deliveries = self.svc.create_comment(self.issue(repo, number), author, body)
        await self._answered(deliveries)
        return comment

    async def edit_comment(self, comment: Comment, author: User, body: str) -> Comment:
        await self._answered(self.svc.edit_comment(comment, author, body))
        return comment

    async def delete_comment(self, comment: Comment, author: User) -> None:
        await self._answered(self.svc.delete_comment(comment, author))

    async def set_labels(self, repo: Repo, number: int, actor: User, labels: Iterable[str]) -> list[Label]:
        """Give the issue exactly these labels (missing ones are created first, as an admin would)."""
        issue = self.issue(repo, number)
        await self._answered(self.svc.change_labels(issue, actor, self._labels(repo, labels)))
        return issue.labels

    async def close_issue(self, repo: Repo, number: int, actor: User) -> None:
        await self._answered(self.svc.set_state(self.issue(repo, number), actor, "closed"))

    async def reopen_issue(self, repo: Repo, number: int, actor: User) -> None:
        await self._answered(self.svc.set_state(self.issue(repo, number), actor, "open"))

    async def create_pull(self, repo: Repo, author: User, *, head: str, title: str, base: str | None = None,
                          body: str = "", files: dict[str, str | bytes | None] | None = None,
                          message: str = "Add changes") -> Pull:
        """Open a pull from ``head`` (``branch`` or ``owner:branch`` for a fork). With ``files``, the head
        branch first gets a commit with them (created from ``base`` if it does not exist)."""
        base = base or repo.default_branch
        head_repo, branch = repo, head
        if ":" in head:
            owner, branch = head.split(":", 1)
            head_repo = self.repo(owner, repo.name)
        if files:
            await self.svc.commit(head_repo, branch, files, message, author, start_point=base)
        pull, deliveries = await self.svc.create_pull(repo, author, head_repo, branch, base, title, body, [])
        await self._answered(deliveries)
        return pull

    async def push_commit(self, repo: Repo, branch: str, files: dict[str, str | bytes | None], *,
                          message: str = "Update", author: User | None = None) -> str:
        """Commit on ``branch`` (a new branch starts at the default branch) as if pushed; open pulls with
        that head get ``pull_request_sync``.
        ``author`` defaults to the poster of such a pull, else the repo owner. Returns the new sha."""
        if author is None:
            pulls = self.state.open_pulls_with_head(repo, branch)
            author = pulls[-1].issue.poster if pulls else repo.owner
        before = len(self._deliverer.deliveries)
        sha = await self.svc.commit(repo, branch, files, message, author)
        await self._answered(self._deliverer.deliveries[before:])
        return sha

    async def merge_pull(self, repo: Repo, number: int, actor: User) -> str:
        """Merge with a merge commit and close with ``merged=true``, as the web UI does; returns the sha."""
        sha, deliveries = await self.svc.merge_pull(self.pull(repo, number), actor)
        await self._answered(deliveries)
        return sha

    # --- webhooks ------------------------------------------------------------------------------------

    @property
    def deliveries(self) -> list[Delivery]:
        """Every delivery sent so far, in order (redeliveries included)."""
        return self._deliverer.deliveries

    async def redeliver(self, delivery_id: str) -> Delivery:
        """Gitea's "Redeliver": the same body under a new delivery id, signed with the hook's secret."""
        original = self._deliverer.find(delivery_id)
        delivery = self._deliverer.enqueue(original.hook, original.event_type, original.body,
                                           redelivery_of=delivery_id)
        await self._answered([delivery])
        return delivery

    async def deliver(self, hook: Hook, event_type: str, body: bytes | JSON, *,
                      secret: str | None = None) -> Delivery:
        """Send an arbitrary body (a dict is serialised like Go) through ``hook``; ``secret`` overrides
        the hook's for a wrongly signed delivery."""
        raw = body if isinstance(body, bytes) else marshal_indent(body)
        delivery = self._deliverer.enqueue(hook, event_type, raw, secret=secret)
        await self._answered([delivery])
        return delivery

    def build_delivery(self, event_type: str, body: bytes, *, secret: str,
                       delivery_id: str) -> dict[str, str]:
        """The exact header set Gitea (or Forgejo) would send with ``body``."""
        return delivery_headers(event_type, body, secret=secret, delivery_id=delivery_id, forgejo=self.forgejo)

    async def settle(self) -> None:
        """Wait until every queued delivery (including those the bot's own API calls caused) is answered."""
        await self._deliverer.drain()

    async def _answered(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await asyncio.gather(*(d.done for d in deliveries))

    # --- traffic -------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        return self.server.requests

    @property
    def violations(self) -> list[Violation]:
        """What the client did against the spec; a test fixture should assert this is empty."""
        return self.server.violations

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of requests the fake itself failed on (answered 500); should stay empty."""
        return self.server.internal_errors

    def calls(self, method: str | None = None, template: str | None = None) -> list[RequestRecord]:
        """API requests filtered by method and/or spec template (e.g. ".../issues/{index}/comments")."""
        return [r for r in self.requests
                if (method is None or r.method == method) and (template is None or r.template == template)]

    # --- faults --------------------------------------------------------------------------------------

    def faults(self, rate: float, *, seed: int | None = None, kinds: Iterable[str] | None = None,
               hang_seconds: float | None = None, only: str | None = None) -> None:
        """Fail ``rate`` of API calls (0 stops), or of those whose path the regex ``only`` finds.
        ``kinds`` from faults.FAULT_KINDS; hangs last ``hang_seconds`` (default 30 s, longer than any
        client timeout should be)."""
        self._faults.configure(rate, seed=seed, kinds=tuple(kinds) if kinds else None, hang_seconds=hang_seconds,
                               only=only)

    @property
    def injected_faults(self) -> list[InjectedFault]:
        return self._faults.injected

    async def outage_start(self, mode: str = "refuse") -> None:
        """Take the API down: ``refuse`` (nothing listens; git too), ``reset`` (API connections dropped)
        or ``503`` (a proxy's Service Unavailable)."""
        if mode not in OUTAGE_MODES:
            raise ValueError(f"mode must be one of {OUTAGE_MODES}")
        await self.outage_end()
        self._faults.outage_mode = mode
        if mode == "refuse":
            await self.server.stop_listening()

    async def outage_end(self) -> None:
        if self._outage_end is not None:
            self._outage_end.cancel()
            self._outage_end = None
        mode, self._faults.outage_mode = self._faults.outage_mode, None
        if mode == "refuse":
            await self.server.listen()

    async def outage(self, seconds: float, mode: str = "refuse") -> None:
        """Start an outage that ends by itself after ``seconds``; returns at once."""
        await self.outage_start(mode)
        loop = asyncio.get_running_loop()
        self._outage_end = loop.call_later(seconds, lambda: loop.create_task(self.outage_end()))

    def outage_at_push(self, seconds: float) -> None:
        """Arm an outage (nothing listens, git too) of ``seconds`` that starts when the next push
        arrives, which is dropped unanswered: the Forge going down exactly as a client pushes."""
        self.server.at_push = lambda: self.outage(seconds, mode="refuse")

    # --- queries for assertions ----------------------------------------------------------------------

    def user(self, login: str) -> User:
        return self._user(login)

    def repo(self, owner: str, name: str) -> Repo:
        repo = self.state.find_repo(owner, name)
        if repo is None:
            raise KeyError(f"{owner}/{name}")
        return repo

    def issue(self, repo: Repo, number: int) -> Issue:
        issue = self.state.find_issue(repo, number)
        if issue is None:
            raise KeyError(f"{repo.full_name}#{number}")
        return issue

    def label_names(self, repo: Repo, number: int) -> list[str]:
        return [label.name for label in self.issue(repo, number).labels]

    def comments(self, repo: Repo, number: int) -> list[Comment]:
        """The issue's comments as the comments API lists them (no timeline entries)."""
        return self.state.issue_comments(self.issue(repo, number))

    def pull(self, repo: Repo, number: int) -> Pull:
        pull = self.issue(repo, number).pull
        if pull is None:
            raise KeyError(f"{repo.full_name}#{number} is not a pull request")
        return pull

    def pulls(self, repo: Repo, state: str = "all") -> list[Pull]:
        return [p for p in self.state.pulls(repo) if state == "all" or p.issue.state == state]

    def reviews(self, repo: Repo, number: int) -> list[Review]:
        issue = self.issue(repo, number)
        return [r for r in self.state.reviews.values() if r.issue is issue]

    def reactions(self, comment_id: int) -> list[Reaction]:
        return [r for r in self.state.reactions if r.comment is not None and r.comment.id == comment_id]

    def issue_reactions(self, repo: Repo, number: int) -> list[Reaction]:
        issue = self.issue(repo, number)
        return [r for r in self.state.reactions if r.issue is issue and r.comment is None]

    def statuses(self, repo: Repo, sha: str) -> list[Status]:
        """Every status posted for a commit (a branch name is resolved), oldest first."""
        sha = repo.branches.get(sha, sha)
        return [s for s in self.state.statuses if s.repo is repo and s.sha == sha]

    def latest_statuses(self, repo: Repo, sha: str) -> dict[str, Status]:
        """context -> the status that wins for it (the latest)."""
        return {s.context: s for s in self.statuses(repo, sha)}

    def tracked_times(self, repo: Repo, number: int) -> list[TrackedTime]:
        issue = self.issue(repo, number)
        return [t for t in self.state.times if t.issue is issue]

    def stopwatches(self, user: User) -> list[Stopwatch]:
        """The user's running stopwatch, if any (a list, as ``GET /user/stopwatches`` returns)."""
        running = self.state.stopwatches.get(user.id)
        return [running] if running else []

    def branch_sha(self, repo: Repo, branch: str) -> str | None:
        return repo.branches.get(branch)

    def git_log(self, repo: Repo, branch: str, limit: int = 100) -> list[git.CommitInfo]:
        """Newest first."""
        return git.log(repo.path, f"refs/heads/{branch}", limit)

    def file_at(self, repo: Repo, ref: str, path: str) -> bytes | None:
        return git.read_file(repo.path, ref, path)

    def clone_url(self, repo: Repo, user: User | None = None) -> str:
        """The HTTP clone URL, with ``user``'s token as Basic credentials if given."""
        if user is None:
            return f"{self.url}/{repo.full_name}.git"
        return f"http://{user.login}:{user.token}@127.0.0.1:{self.server.port}/{repo.full_name}.git"

    # --- helpers -------------------------------------------------------------------------------------

    def _user(self, login: str) -> User:
        user = self.state.find_user(login)
        if user is None:
            raise KeyError(login)
        return user

    def _labels(self, repo: Repo, names: Iterable[str]) -> list[Label]:
        usable = {label.name: label for label in self.state.usable_labels(repo)}
        for name in names:
            if name not in usable:
                usable[name] = self.add_label(repo, name)
        return [usable[name] for name in names]
