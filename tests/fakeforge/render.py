"""Gitea's ``services/convert``: model objects to API/webhook JSON, field for field and in wire order.

Dict insertion order is the Go struct field order, because webhook bodies are compared byte for byte.
Who is rendered how follows Gitea: ``ToUser(u, doer)`` shows the real e-mail to any signed-in viewer and
the private fields (language, last_login, active, ...) only to the user themself or a site admin; the
anonymous form (``doer`` = nil, used for ``sender`` and ``comment.user``) shows the no-reply placeholder.
A repository carries the permission of whichever user the caller chose, which is why
``repository.permissions`` in a webhook means nothing about the recipient.
[FJ] Forgejo differs in a few fields; ``Site.forgejo`` switches them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from .gojson import UNIX_ZERO, ZERO_TIME, rfc3339
from .state import (
    Access, Comment, Issue, Label, Pull, Reaction, Repo, Review, State, Status, Stopwatch, TrackedTime, User,
)

JSON = dict[str, Any]


@dataclass
class Site:
    """Server-wide settings that show up in rendered URLs."""

    app_url: str = "http://127.0.0.1/"  # ROOT_URL, with its trailing slash
    forgejo: bool = False

    @property
    def domain(self) -> str:
        return urlsplit(self.app_url).hostname or "localhost"

    @property
    def noreply(self) -> str:
        return f"noreply.{self.domain}"  # [service] NO_REPLY_ADDRESS default

    @property
    def api_url(self) -> str:
        return self.app_url + "api/v1"

    @property
    def swagger_url(self) -> str:
        return self.app_url + "api/swagger"  # the "url" of every API error


def seconds_to_hours(seconds: int) -> str:
    """util.SecToHours: "1 hour 5 minutes", or seconds when under a minute."""
    def part(value: int, name: str) -> str:
        return f"{value} {name}{'s' if value > 1 else ''} " if value else ""

    text = part(seconds // 3600, "hour") + part(seconds // 60 % 60, "minute")
    if not text and seconds > 0:
        text = part(seconds, "second")
    return text.rstrip()


class Renderer:
    """The convert package, bound to a site and the state it reads permissions and reviews from."""

    def __init__(self, site: Site, state: State) -> None:
        self.site = site
        self.state = state

    # --- URLs --------------------------------------------------------------------------------------

    def repo_html(self, repo: Repo) -> str:
        return f"{self.site.app_url}{repo.owner.login}/{repo.name}"

    def repo_api(self, repo: Repo) -> str:
        return f"{self.site.api_url}/repos/{repo.owner.login}/{repo.name}"

    def issue_html(self, issue: Issue) -> str:
        return f"{self.repo_html(issue.repo)}/{'pulls' if issue.is_pull else 'issues'}/{issue.number}"

    def comment_html(self, comment: Comment) -> str:
        return f"{self.issue_html(comment.issue)}#issuecomment-{comment.id}"

    # --- users -------------------------------------------------------------------------------------

    def user(self, user: User | None, doer: User | None) -> JSON | None:
        """ToUser(user, doer)."""
        if user is None:
            return None
        signed = doer is not None
        authed = doer is not None and (doer.is_admin or doer.id == user.id)
        return self._user(user, signed, authed)

    def user_with_access(self, user: User, mode: Access) -> JSON:
        """ToUserWithAccessMode: a repo owner as seen with some permission on the repo."""
        return self._user(user, mode != Access.NONE, False)

    def placeholder_email(self, user: User) -> str:
        if self.site.forgejo:
            return f"{user.login.lower()}@{self.site.noreply}"
        return f"{user.id}+{user.login.lower()}@{self.site.noreply}"

    def _user(self, user: User, signed: bool, authed: bool) -> JSON:
        email = self.placeholder_email(user)
        if signed and (not user.keep_email_private or authed):
            email = user.email
        out: JSON = {
            "id": user.id,
            "login": user.login,
            "login_name": "",
            "source_id": 0,
            "full_name": user.full_name,
            "email": email,
            "avatar_url": f"{self.site.app_url}avatars/{user.avatar_hash}",
            "html_url": f"{self.site.app_url}{user.login}",
            "language": user.language if authed else "",
            "is_admin": user.is_admin if authed else False,
            "last_login": (rfc3339(user.last_login) or ZERO_TIME) if authed else ZERO_TIME,
            "created": rfc3339(user.created) or ZERO_TIME,
            "restricted": user.restricted,
            "active": user.active if authed else False,
            "prohibit_login": user.prohibit_login if authed else False,
            "location": user.location,
        }
        if self.site.forgejo:
            out["pronouns"] = ""
        out |= {
            "website": user.website,
            "description": user.description,
            "visibility": user.visibility,
            "followers_count": 0,
            "following_count": 0,
            "starred_repos_count": 0,
        }
        return out

    # --- repositories ------------------------------------------------------------------------------

    def repo(self, repo: Repo, mode: Access, *, as_parent: bool = False) -> JSON:
        """ToRepo(repo, permission): a fork carries its parent, rendered with the same permission."""
        fj = self.site.forgejo
        html = self.repo_html(repo)
        ssh = f"git@{self.site.domain}:{repo.owner.login}/{repo.name}"
        out: JSON = {
            "id": repo.id,
            "owner": self.user_with_access(repo.owner, mode),
            "name": repo.name,
            "full_name": repo.full_name,
            "description": repo.description,
            "empty": not repo.branches,
            "private": repo.private,
            "fork": repo.parent is not None,
            "template": False,
        }
        if repo.parent is not None and not as_parent:
            out["parent"] = self.repo(repo.parent, mode, as_parent=True)
        elif fj:
            out["parent"] = None  # [FJ] not omitempty
        out |= {
            "mirror": False,
            "size": repo.size,
            "language": repo.language,
            "languages_url": f"{self.repo_api(repo)}/languages",
            "html_url": html,
            "url": self.repo_api(repo),
            "link": "",
            "ssh_url": f"{ssh}.git",
            "clone_url": f"{html}.git",
            "original_url": "",
            "website": repo.website,
            "stars_count": repo.stars_count,
            "forks_count": repo.forks_count,
            "watchers_count": repo.watchers_count,
        }
        if not fj:
            out["branch_count"] = repo.branch_count
        out |= {
            "open_issues_count": repo.open_issues_count,
            "open_pr_counter": repo.open_pr_counter,
            "release_counter": repo.release_counter,
            "default_branch": repo.default_branch,
            "archived": False,
            "created_at": rfc3339(repo.created_at),
            "updated_at": rfc3339(repo.updated_at),
            "archived_at": UNIX_ZERO,
            "permissions": {"admin": mode >= Access.ADMIN, "push": mode >= Access.WRITE, "pull": mode >= Access.READ},
        }
        if not fj:
            out["has_code"] = True
        out |= {
            "has_issues": True,
            "internal_tracker": {
                "enable_time_tracker": repo.time_tracking,
                "allow_only_contributors_to_track_time": True,
                "enable_issue_dependencies": True,
            },
            "has_wiki": True,
        }
        if fj:
            out |= {
                "has_wiki_contents": False,
                "wiki_branch": "main",
                "wiki_ssh_url": f"{ssh}.wiki.git",
                "wiki_clone_url": f"{html}.wiki.git",
                "globally_editable_wiki": False,
            }
        out |= {"has_pull_requests": True, "has_projects": True}
        if not fj:
            out["projects_mode"] = "all"
        out |= {
            "has_releases": True,
            "has_packages": True,
            "has_actions": True,
            "ignore_whitespace_conflicts": False,
            "allow_merge_commits": True,
            "allow_rebase": True,
            "allow_rebase_explicit": True,
            "allow_squash_merge": True,
            "allow_fast_forward_only_merge": True,
            "allow_rebase_update": True,
        }
        if not fj:
            out |= {"allow_manual_merge": True, "autodetect_manual_merge": False}
        out |= {
            "default_delete_branch_after_merge": False,
            "default_merge_style": "merge",
            "default_allow_maintainer_edit": False,
        }
        if fj:
            out["default_update_style"] = "merge"
        out |= {
            "avatar_url": "",
            "internal": False,
            "mirror_interval": "",
            "object_format_name": "sha1",
            "mirror_updated": ZERO_TIME,
        }
        if fj:
            out["repo_transfer"] = None
        out["topics"] = list(repo.topics)
        if not fj:
            out["licenses"] = list(repo.licenses)
        return out

    def repo_for(self, repo: Repo, viewer: User | None) -> JSON:
        return self.repo(repo, self.state.access(viewer, repo))

    # --- labels, issues, comments ------------------------------------------------------------------

    def label(self, label: Label) -> JSON:
        if label.org is not None:
            url = f"{self.site.api_url}/orgs/{label.org.login}/labels/{label.id}"
        else:
            assert label.repo is not None
            url = f"{self.repo_api(label.repo)}/labels/{label.id}"
        return {
            "id": label.id,
            "name": label.name,
            "exclusive": label.exclusive,
            "is_archived": label.is_archived,
            "color": label.color,
            "description": label.description,
            "url": url,
        }

    def issue(self, issue: Issue, doer: User | None) -> JSON:
        """ToAPIIssue(doer, issue)."""
        fj = self.site.forgejo
        assignees = [self.user(a, doer) for a in issue.assignees] or None
        out: JSON = {
            "id": issue.id,
            "url": f"{self.repo_api(issue.repo)}/issues/{issue.number}",
            "html_url": self.issue_html(issue),
            "number": issue.number,
            "user": self.user(issue.poster, doer),
            "original_author": "",
            "original_author_id": 0,
            "title": issue.title,
            "body": issue.body,
            "ref": "",
            "assets": [],
            "labels": [self.label(lb) for lb in issue.labels],
            "milestone": None,
            "assignee": assignees[0] if assignees else None,
            "assignees": assignees,
            "state": issue.state,
            "is_locked": issue.is_locked,
            "comments": issue.num_comments,
            "created_at": rfc3339(issue.created_at),
            "updated_at": rfc3339(issue.updated_at),
            "closed_at": rfc3339(issue.closed_at),
            "due_date": None,
        }
        if not fj:
            out["time_estimate"] = 0
        out["pull_request"] = None
        if issue.pull is not None:
            out["pull_request"] = {
                "merged": issue.pull.has_merged,
                "merged_at": rfc3339(issue.pull.merged_at),
                "draft": issue.pull.draft,
                "html_url": self.issue_html(issue),
            }
        out["repository"] = {
            "id": issue.repo.id,
            "name": issue.repo.name,
            "owner": issue.repo.owner.login,
            "full_name": issue.repo.full_name,
        }
        out["pin_order"] = 0
        if not fj:
            out["content_version"] = 0
        return out

    def comment(self, comment: Comment) -> JSON:
        """ToAPIComment: the poster is always rendered anonymously."""
        html = self.issue_html(comment.issue)
        return {
            "id": comment.id,
            "html_url": self.comment_html(comment),
            "pull_request_url": html if comment.issue.is_pull else "",
            "issue_url": "" if comment.issue.is_pull else html,
            "user": self.user(comment.poster, None),
            "original_author": "",
            "original_author_id": 0,
            "body": comment.body,
            "assets": [],
            "created_at": rfc3339(comment.created_at),
            "updated_at": rfc3339(comment.updated_at),
        }

    # --- pull requests -----------------------------------------------------------------------------

    def pull(self, pull: Pull, doer: User | None, *, with_stats: bool = True) -> JSON:
        """ToAPIPullRequest(pr, doer). Lists leave out the diff stats, as Gitea does."""
        fj = self.site.forgejo
        issue = pull.issue
        api_issue = self.issue(issue, doer)
        base_repo = issue.repo
        reviews = [r for r in self.state.reviews.values() if r.issue is issue]
        review_comments = sum(len(r.comments) for r in reviews if r.state != "PENDING")
        out: JSON = {
            "id": pull.id,
            "url": self.issue_html(issue),
            "number": issue.number,
            "user": api_issue["user"],
            "title": issue.title,
            "body": issue.body,
            "labels": api_issue["labels"],
            "milestone": None,
            "assignee": api_issue["assignee"],
            "assignees": api_issue["assignees"] if fj else (api_issue["assignees"] or []),
            "requested_reviewers": [],
            "requested_reviewers_teams": [],
            "state": issue.state,
            "draft": pull.draft,
            "is_locked": issue.is_locked,
            "comments": issue.num_comments,
        }
        if fj or review_comments:
            out["review_comments"] = review_comments  # omitempty in Gitea
        if with_stats:
            out |= {"additions": pull.additions, "deletions": pull.deletions, "changed_files": pull.changed_files}
        head_ref = pull.head_branch
        if pull.head_branch not in pull.head_repo.branches:
            head_ref = f"refs/pull/{issue.number}/head"
        out |= {
            "html_url": self.issue_html(issue),
            "diff_url": f"{self.issue_html(issue)}.diff",
            "patch_url": f"{self.issue_html(issue)}.patch",
            "mergeable": pull.mergeable,
            "merged": pull.has_merged,
            "merged_at": rfc3339(pull.merged_at),
            "merge_commit_sha": pull.merge_commit_sha,
            "merged_by": self.user(pull.merged_by, None),
            "allow_maintainer_edit": pull.allow_maintainer_edit,
            "base": {
                "label": pull.base_branch,
                "ref": pull.base_branch,
                "sha": base_repo.branches.get(pull.base_branch, ""),
                "repo_id": base_repo.id,
                "repo": self.repo_for(base_repo, doer),
            },
            "head": {
                "label": pull.head_branch,
                "ref": head_ref,
                "sha": pull.head_sha,
                "repo_id": pull.head_repo.id,
                "repo": self.repo_for(pull.head_repo, doer),
            },
            "merge_base": pull.merge_base,
            "due_date": None,
            "created_at": rfc3339(issue.created_at),
            "updated_at": rfc3339(issue.updated_at),
            "closed_at": rfc3339(issue.closed_at),
            "pin_order": 0,
        }
        out["flow" if fj else "content_version"] = 0
        return out

    def review(self, review: Review, doer: User | None) -> JSON:
        html = self.issue_html(review.issue)
        return {
            "id": review.id,
            "user": self.user(review.reviewer, doer),
            "team": None,
            "state": review.state,
            "body": review.body,
            "commit_id": review.commit_id,
            "stale": review.stale,
            "official": review.official,
            "dismissed": review.dismissed,
            "comments_count": len(review.comments),
            "submitted_at": rfc3339(review.created_at),
            "updated_at": rfc3339(review.updated_at),
            "html_url": f"{html}#issuecomment-{review.comment_id}",
            "pull_request_url": html,
        }

    def review_comment(self, comment: Comment, doer: User | None) -> JSON:
        html = self.issue_html(comment.issue)
        return {
            "id": comment.id,
            "body": comment.body,
            "user": self.user(comment.poster, doer),
            "resolver": None,
            "pull_request_review_id": comment.review.id if comment.review else 0,
            "created_at": rfc3339(comment.created_at),
            "updated_at": rfc3339(comment.updated_at),
            "path": comment.path,
            "commit_id": comment.commit_id,
            "original_commit_id": comment.commit_id,
            "diff_hunk": "",
            "position": comment.line if comment.line > 0 else 0,
            "original_position": -comment.line if comment.line < 0 else 0,
            "html_url": f"{html}#issuecomment-{comment.id}",
            "pull_request_url": html,
        }

    # --- everything else ---------------------------------------------------------------------------

    def reaction(self, reaction: Reaction, doer: User | None) -> JSON:
        return {"user": self.user(reaction.user, doer), "content": reaction.content,
                "created_at": rfc3339(reaction.created_at)}

    def status(self, status: Status) -> JSON:
        return {
            "id": status.index,
            "status": status.state,
            "target_url": status.target_url,
            "description": status.description,
            "url": f"{self.repo_api(status.repo)}/statuses/{quote(status.sha)}",
            "context": status.context,
            "creator": self.user(status.creator, None),
            "created_at": rfc3339(status.created_at),
            "updated_at": rfc3339(status.created_at),
        }

    def tracked_time(self, tracked: TrackedTime, doer: User | None) -> JSON:
        return {
            "id": tracked.id,
            "created": rfc3339(tracked.created),
            "time": tracked.time,
            "user_id": tracked.user.id,
            "user_name": tracked.user.login,
            "issue_id": tracked.issue.id,
            "issue": self.issue(tracked.issue, doer),
        }

    def stopwatch(self, stopwatch: Stopwatch) -> JSON:
        seconds = int((self.state.clock.now() - stopwatch.created).total_seconds())
        return {
            "created": rfc3339(stopwatch.created),
            "seconds": seconds,
            "duration": seconds_to_hours(seconds),
            "issue_index": stopwatch.issue.number,
            "issue_title": stopwatch.issue.title,
            "repo_owner_name": stopwatch.issue.repo.owner.login,
            "repo_name": stopwatch.issue.repo.name,
        }
