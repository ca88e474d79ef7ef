"""The fake Forge's data model: users, repos, issues, pulls and everything hanging off them.

Plain dataclasses plus one ``State`` that owns the id counters and the lookups, so the HTTP layer, the
webhook builder and the test helpers all see the same objects. Ids follow Gitea's tables: users and orgs
share one sequence, issue numbers are per repo and shared by issues and pulls, comment ids are global and
also used by timeline entries and review comments, commit status ids are per (repo, sha).
"""

from __future__ import annotations

import fnmatch

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import IntEnum
from pathlib import Path


class Access(IntEnum):
    """Gitea's perm.AccessMode."""

    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3
    OWNER = 4

    @classmethod
    def parse(cls, name: str) -> Access:
        return cls[name.upper()]

    @property
    def label(self) -> str:
        return self.name.lower()


WIP_PREFIXES = ("WIP:", "[WIP]")  # [repository.pull-request] WORK_IN_PROGRESS_PREFIXES default
REACTIONS = ("+1", "-1", "laugh", "hooray", "confused", "heart", "rocket", "eyes")  # [ui] REACTIONS default


class Clock:
    """Wall clock with a test-controlled offset, so stopwatch and timestamp tests need no sleeping."""

    def __init__(self) -> None:
        self.offset = timedelta()
        self.frozen: datetime | None = None  # set by freeze(): all that follows happens within one second

    def now(self) -> datetime:
        if self.frozen is not None:
            return self.frozen
        # Gitea stores unix seconds; every timestamp it returns is whole seconds.
        return (datetime.now(timezone.utc) + self.offset).replace(microsecond=0)

    def freeze(self) -> None:
        """Stop the clock at this second: what a person or a program does within one second."""
        self.frozen = self.now()

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@dataclass(eq=False)
class User:
    """A user or an organisation (Gitea keeps both in one table)."""

    id: int
    login: str
    full_name: str = ""
    email: str = ""
    is_admin: bool = False
    is_org: bool = False
    token: str = ""
    scopes: frozenset[str] | None = None  # None: an "all" token
    avatar_hash: str = ""
    language: str = ""
    active: bool = True
    last_login: datetime | None = None
    created: datetime | None = None
    location: str = ""
    website: str = ""
    description: str = ""
    visibility: str = "public"
    restricted: bool = False
    prohibit_login: bool = False
    keep_email_private: bool = False


@dataclass(eq=False)
class Repo:
    id: int
    owner: User
    name: str
    path: Path
    description: str = ""
    private: bool = False
    parent: Repo | None = None
    default_branch: str = "main"
    website: str = ""
    size: int = 0
    language: str = ""
    stars_count: int = 0
    forks_count: int = 0
    watchers_count: int = 0
    release_counter: int = 0
    open_issues_count: int = 0
    open_pr_counter: int = 0
    branches: dict[str, str] = field(default_factory=dict)  # name -> sha, refreshed after every ref change
    topics: list[str] = field(default_factory=list)
    licenses: list[str] = field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None
    time_tracking: bool = True
    collaborators: dict[int, Access] = field(default_factory=dict)
    next_index: int = 1
    # Branch protection rules: a rule name (a branch name or a glob, as Gitea's) -> the logins its push
    # allowlist holds (empty: pushing disabled for everyone).
    protections: dict[str, frozenset[str]] = field(default_factory=dict)

    def protection(self, branch: str) -> str | None:
        """The rule protecting ``branch``: an exact name wins over a glob, as in Gitea."""
        if branch in self.protections:
            return branch
        return next((rule for rule in self.protections if fnmatch.fnmatchcase(branch, rule)), None)

    def may_push(self, login: str, branch: str) -> bool:
        rule = self.protection(branch)
        return rule is None or login in self.protections[rule]

    @property
    def full_name(self) -> str:
        return f"{self.owner.login}/{self.name}"

    @property
    def branch_count(self) -> int:
        return len(self.branches)


@dataclass(eq=False)
class Label:
    id: int
    name: str
    color: str  # six hex digits, no '#', as Gitea stores it
    description: str = ""
    exclusive: bool = False
    is_archived: bool = False
    repo: Repo | None = None
    org: User | None = None


@dataclass(eq=False)
class Issue:
    id: int
    repo: Repo
    number: int
    poster: User
    title: str
    body: str = ""
    labels: list[Label] = field(default_factory=list)
    state: str = "open"
    is_locked: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    closed_at: datetime | None = None
    num_comments: int = 0
    assignees: list[User] = field(default_factory=list)
    pull: Pull | None = None

    @property
    def is_pull(self) -> bool:
        return self.pull is not None


@dataclass(eq=False)
class Pull:
    id: int
    issue: Issue
    head_repo: Repo
    head_branch: str
    base_branch: str
    head_sha: str
    merge_base: str
    additions: int = 0
    deletions: int = 0
    changed_files: int = 0
    mergeable: bool = True
    has_merged: bool = False
    merged_at: datetime | None = None
    merged_by: User | None = None
    merge_commit_sha: str | None = None
    allow_maintainer_edit: bool = False

    @property
    def number(self) -> int:
        return self.issue.number

    @property
    def draft(self) -> bool:
        return self.issue.title.upper().startswith(WIP_PREFIXES)


@dataclass(eq=False)
class Comment:
    """A timeline row. ``type`` is "comment" for what the comments API lists; others are timeline-only."""

    id: int
    issue: Issue
    poster: User
    body: str
    created_at: datetime
    updated_at: datetime
    type: str = "comment"
    review: Review | None = None
    path: str = ""
    line: int = 0  # > 0: line in the new file, < 0: line in the old file (Gitea's convention)
    commit_id: str = ""


@dataclass(eq=False)
class Review:
    id: int
    issue: Issue
    reviewer: User
    state: str  # APPROVED, REQUEST_CHANGES, COMMENT, PENDING
    body: str
    commit_id: str
    created_at: datetime
    updated_at: datetime
    official: bool = False
    stale: bool = False
    dismissed: bool = False
    comment_id: int = 0  # the review's timeline comment, which its html_url points at
    comments: list[Comment] = field(default_factory=list)


@dataclass(eq=False)
class Reaction:
    id: int
    user: User
    content: str
    created_at: datetime
    issue: Issue
    comment: Comment | None = None


@dataclass(eq=False)
class Status:
    index: int  # what the API calls "id": per (repo, sha)
    repo: Repo
    sha: str
    state: str
    target_url: str
    description: str
    context: str
    creator: User
    created_at: datetime


@dataclass(eq=False)
class TrackedTime:
    id: int
    issue: Issue
    user: User
    time: int
    created: datetime


@dataclass(eq=False)
class Stopwatch:
    user: User
    issue: Issue
    created: datetime


@dataclass(eq=False)
class Hook:
    id: int
    repo: Repo
    url: str
    secret: str = ""
    events: frozenset[str] | None = None  # None: every event type ("send everything")
    authorization: str | None = None
    active: bool = True
    target_type: str = "repository"

    def wants(self, event_type: str) -> bool:
        return self.active and (self.events is None or event_type in self.events)


def new_token() -> str:
    """Gitea access tokens are 40 lowercase hex digits."""
    return secrets.token_hex(20)


class State:
    """Every object of the fake, with Gitea's id sequences and permission rules."""

    def __init__(self, root: Path, clock: Clock | None = None) -> None:
        self.root = root
        self.clock = clock or Clock()
        self._seq: dict[str, int] = {}
        self.users: dict[int, User] = {}
        self.repos: dict[int, Repo] = {}
        self.labels: dict[int, Label] = {}
        self.issues: dict[int, Issue] = {}
        self.comments: dict[int, Comment] = {}
        self.reviews: dict[int, Review] = {}
        self.reactions: list[Reaction] = []
        self.statuses: list[Status] = []
        self.times: list[TrackedTime] = []
        self.stopwatches: dict[int, Stopwatch] = {}  # by user id: at most one running per user
        self.hooks: list[Hook] = []

    def next_id(self, table: str) -> int:
        value = self._seq.get(table, 0) + 1
        self._seq[table] = value
        return value

    def reserve_id(self, table: str, value: int) -> int:
        """Use an explicit id (to reproduce a scenario) and keep the sequence ahead of it."""
        self._seq[table] = max(self._seq.get(table, 0), value)
        return value

    def _id(self, table: str, explicit: int | None) -> int:
        return self.next_id(table) if explicit is None else self.reserve_id(table, explicit)

    # --- users and repos -------------------------------------------------------------------------

    def add_user(self, login: str, *, id: int | None = None, is_org: bool = False, **fields: object) -> User:
        if self.find_user(login):
            raise ValueError(f"user {login!r} exists")
        email = str(fields.pop("email", "" if is_org else f"{login.lower()}@example.com"))
        user = User(
            id=self._id("user", id),
            login=login,
            email=email,
            is_org=is_org,
            token="" if is_org else new_token(),
            avatar_hash=hashlib.md5((email or login).encode()).hexdigest(),
            created=self.clock.now(),
            active=not is_org,
        )
        for key, value in fields.items():
            setattr(user, key, value)
        self.users[user.id] = user
        return user

    def find_user(self, login: str) -> User | None:
        lower = login.lower()
        return next((u for u in self.users.values() if u.login.lower() == lower), None)

    def user_by_token(self, token: str) -> User | None:
        return next((u for u in self.users.values() if u.token and secrets.compare_digest(u.token, token)), None)

    def user_by_email(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email and u.email.lower() == email.lower()), None)

    def add_repo(self, owner: User, name: str, *, id: int | None = None, **fields: object) -> Repo:
        if self.find_repo(owner.login, name):
            raise ValueError(f"repo {owner.login}/{name} exists")
        now = self.clock.now()
        repo = Repo(
            id=self._id("repo", id),
            owner=owner,
            name=name,
            path=self.root / "repositories" / owner.login.lower() / f"{name.lower()}.git",
            created_at=now,
            updated_at=now,
        )
        for key, value in fields.items():
            setattr(repo, key, value)
        self.repos[repo.id] = repo
        return repo

    def find_repo(self, owner: str, name: str) -> Repo | None:
        key = (owner.lower(), name.lower())
        return next((r for r in self.repos.values() if (r.owner.login.lower(), r.name.lower()) == key), None)

    def access(self, user: User | None, repo: Repo) -> Access:
        """access_model.GetUserRepoPermission, reduced to one mode for the whole repo."""
        if user is None:
            return Access.NONE if repo.private else Access.READ
        if user.is_admin or user.id == repo.owner.id:
            return Access.OWNER
        granted = repo.collaborators.get(user.id, Access.NONE)
        if granted == Access.NONE and not repo.private:
            return Access.READ
        return granted

    def can_see(self, user: User | None, repo: Repo) -> bool:
        return self.access(user, repo) >= Access.READ

    # --- labels ----------------------------------------------------------------------------------

    def add_label(self, repo: Repo | None, name: str, color: str = "ee0701", *, org: User | None = None,
                  id: int | None = None, **fields: object) -> Label:
        label = Label(id=self._id("label", id), name=name, color=color.lstrip("#").lower(), repo=repo, org=org)
        for key, value in fields.items():
            setattr(label, key, value)
        self.labels[label.id] = label
        return label

    def repo_labels(self, repo: Repo) -> list[Label]:
        return [lb for lb in self.labels.values() if lb.repo is repo]

    def usable_labels(self, repo: Repo) -> list[Label]:
        """Labels an issue of this repo may carry: the repo's own, then its org's."""
        org_labels = [lb for lb in self.labels.values() if lb.org is not None and lb.org is repo.owner]
        return self.repo_labels(repo) + org_labels

    # --- issues and comments ---------------------------------------------------------------------

    def add_issue(self, repo: Repo, poster: User, title: str, body: str = "", *, id: int | None = None,
                  number: int | None = None) -> Issue:
        now = self.clock.now()
        if number is None:
            number = repo.next_index
        repo.next_index = max(repo.next_index, number + 1)
        issue = Issue(id=self._id("issue", id), repo=repo, number=number, poster=poster, title=title, body=body,
                      created_at=now, updated_at=now)
        self.issues[issue.id] = issue
        repo.open_issues_count += 1
        return issue

    def find_issue(self, repo: Repo, number: int) -> Issue | None:
        return next((i for i in self.issues.values() if i.repo is repo and i.number == number), None)

    def add_comment(self, issue: Issue, poster: User, body: str, *, type: str = "comment",
                    id: int | None = None) -> Comment:
        now = self.clock.now()
        comment = Comment(id=self._id("comment", id), issue=issue, poster=poster, body=body, created_at=now,
                          updated_at=now, type=type)
        self.comments[comment.id] = comment
        if type == "comment":
            issue.num_comments += 1
            issue.updated_at = now
        return comment

    def issue_comments(self, issue: Issue) -> list[Comment]:
        return [c for c in self.comments.values() if c.issue is issue and c.type == "comment"]

    def delete_comment(self, comment: Comment) -> None:
        del self.comments[comment.id]
        self.reactions = [r for r in self.reactions if r.comment is not comment]
        if comment.type == "comment":
            comment.issue.num_comments -= 1

    # --- pulls -----------------------------------------------------------------------------------

    def pulls(self, repo: Repo) -> list[Pull]:
        return [i.pull for i in self.issues.values() if i.repo is repo and i.pull is not None]

    def open_pulls_with_head(self, head_repo: Repo, branch: str) -> list[Pull]:
        return [i.pull for i in self.issues.values()
                if i.pull is not None and i.state == "open" and i.pull.head_repo is head_repo
                and i.pull.head_branch == branch]

    def add_pull(self, issue: Issue, head_repo: Repo, head_branch: str, base_branch: str, head_sha: str,
                 merge_base: str, *, id: int | None = None) -> Pull:
        pull = Pull(id=self._id("pull", id), issue=issue, head_repo=head_repo, head_branch=head_branch,
                    base_branch=base_branch, head_sha=head_sha, merge_base=merge_base)
        issue.pull = pull
        issue.repo.open_issues_count -= 1  # Gitea counts issues and pulls separately
        issue.repo.open_pr_counter += 1
        return pull

    # --- time tracking ---------------------------------------------------------------------------

    def add_time(self, issue: Issue, user: User, seconds: int, created: datetime | None = None) -> TrackedTime:
        tracked = TrackedTime(id=self.next_id("tracked_time"), issue=issue, user=user, time=seconds,
                              created=created or self.clock.now())
        self.times.append(tracked)
        return tracked

    def finish_stopwatch(self, stopwatch: Stopwatch) -> TrackedTime:
        """Book the elapsed time and leave a ``stop_tracking`` timeline entry, as Gitea does."""
        del self.stopwatches[stopwatch.user.id]
        elapsed = int((self.clock.now() - stopwatch.created).total_seconds())
        self.add_comment(stopwatch.issue, stopwatch.user, "", type="stop_tracking")
        return self.add_time(stopwatch.issue, stopwatch.user, elapsed)
