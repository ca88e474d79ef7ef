"""Loose pydantic models of the webhook payloads the bot reads; unknown fields are ignored.

Only what the bot uses is declared, so Gitea and Forgejo versions that add fields still parse.
``repository.permissions`` is deliberately absent: it belongs to an arbitrary user.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class User(Loose):
    id: int
    login: str


class Label(Loose):
    id: int
    name: str


class Owner(Loose):
    login: str


class Repository(Loose):
    id: int
    name: str
    full_name: str
    owner: Owner
    default_branch: str = "main"
    clone_url: str = ""
    html_url: str = ""

    @property
    def owner_login(self) -> str:
        return self.owner.login


class Issue(Loose):
    id: int
    number: int
    title: str = ""
    body: str = ""
    user: User
    labels: list[Label] | None = None
    state: str = "open"
    html_url: str = ""
    updated_at: str = ""
    pull_request: dict | None = None


class Comment(Loose):
    id: int
    body: str = ""
    user: User
    html_url: str = ""


class RepositoryRef(Loose):
    id: int | None = None


class Branch(Loose):
    ref: str = ""
    sha: str = ""
    repo_id: int | None = None
    repo: RepositoryRef | None = None

    @property
    def repository_id(self) -> int | None:
        """The repository the branch lives in; None when the payload does not say (a deleted fork)."""
        return self.repo_id or (self.repo.id if self.repo else None) or None


class PullRequest(Loose):
    id: int
    number: int
    title: str = ""
    body: str = ""
    user: User
    labels: list[Label] | None = None
    state: str = "open"
    html_url: str = ""
    updated_at: str = ""
    head: Branch
    base: Branch

    @property
    def is_fork(self) -> bool:
        """Whether the head branch lives in another repository; unknown counts as a fork (fail closed)."""
        head = self.head.repository_id
        return head is None or head != self.base.repository_id


class Payload(Loose):
    """What every delivery has; event types the bot does not read parse as this."""

    action: str = ""
    sender: User


class IssuePayload(Payload):
    number: int
    issue: Issue
    repository: Repository


class IssueCommentPayload(Payload):
    issue: Issue
    pull_request: PullRequest | None = None
    comment: Comment
    repository: Repository
    is_pull: bool = False


class PullRequestPayload(Payload):
    number: int
    pull_request: PullRequest
    repository: Repository


PAYLOADS: dict[str, type[Payload]] = {
    "issues": IssuePayload,
    "issue_label": IssuePayload,
    "issue_comment": IssueCommentPayload,
    "pull_request_comment": IssueCommentPayload,
    "pull_request": PullRequestPayload,
    "pull_request_label": PullRequestPayload,
    "pull_request_sync": PullRequestPayload,
}
