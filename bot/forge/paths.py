"""Every Forge REST path the bot uses, one place per resource, below ``/api/v1`` (Gitea 1.26, Forgejo 15).

A pull request is also an issue: its comments, labels, stopwatch and times use the issue paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

USER = "/user"  # the token's own account
STOPWATCHES = "/user/stopwatches"  # the token's user's running stopwatches, on any repository
VERSION = "/version"


@dataclass(frozen=True)
class Repo:
    """One repository's paths."""

    owner: str
    name: str

    @property
    def path(self) -> str:
        return f"/repos/{self.owner}/{self.name}"

    # Issues and comments

    def issue(self, number: int) -> str:
        return f"{self.path}/issues/{number}"

    def comments(self, number: int) -> str:
        """An issue's comments: list (unpaginated) and create."""
        return f"{self.issue(number)}/comments"

    def comment(self, comment_id: int) -> str:
        """One comment, by its id alone: edit and delete."""
        return f"{self.path}/issues/comments/{comment_id}"

    def reactions(self, comment_id: int) -> str:
        return f"{self.comment(comment_id)}/reactions"

    # Labels

    def labels(self) -> str:
        """The repository's labels: list and create."""
        return f"{self.path}/labels"

    def issue_labels(self, number: int) -> str:
        """An issue's labels: add (ids or names; answers with the full set)."""
        return f"{self.issue(number)}/labels"

    def issue_label(self, number: int, label_id: int) -> str:
        """Remove one label from an issue: by numeric id (Gitea takes no name here)."""
        return f"{self.issue_labels(number)}/{label_id}"

    # Time tracking

    def stopwatch(self, number: int, action: Literal["start", "stop", "delete"]) -> str:
        """Start, stop or delete the token's user's stopwatch on an issue."""
        return f"{self.issue(number)}/stopwatch/{action}"

    def times(self, number: int) -> str:
        """An issue's tracked times: list and add."""
        return f"{self.issue(number)}/times"

    # Pull requests and reviews

    def pulls(self) -> str:
        """Pull requests: list and create."""
        return f"{self.path}/pulls"

    def pull(self, number: int) -> str:
        return f"{self.pulls()}/{number}"

    def pull_files(self, number: int) -> str:
        return f"{self.pull(number)}/files"

    def reviews(self, number: int) -> str:
        return f"{self.pull(number)}/reviews"

    # Branches

    def branch(self, name: str) -> str:
        """One branch, with its head commit."""
        return f"{self.path}/branches/{name}"

    # Commit statuses

    def statuses(self, sha: str) -> str:
        """Create a status for a commit."""
        return f"{self.path}/statuses/{sha}"

    def combined_status(self, ref: str) -> str:
        """The latest status per context of a commit."""
        return f"{self.path}/commits/{ref}/status"

    # Permissions

    def permission(self, login: str) -> str:
        """A user's permission on the repository (needs repo admin unless asking about oneself)."""
        return f"{self.path}/collaborators/{login}/permission"
