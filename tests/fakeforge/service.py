"""What happens when something changes: Gitea's services layer plus its webhook notifier.

The REST handlers and the test helpers both come through here, so a comment posted by the bot through
the API and one posted by "alice" in a test produce the same rows, the same timeline ids and the same
webhook (with the actor as ``sender``). Methods return the deliveries they queued; the test helpers
await those, the API handlers do not (Gitea answers before it delivers).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from . import git
from .hooks import REVIEW_EVENTS, Deliverer, Delivery, comment_event, issue_event, pull_payload
from .render import JSON, Renderer, Site
from .state import (
    REACTIONS, Access, Comment, Issue, Label, Pull, Reaction, Repo, Review, State, Status, Stopwatch, TrackedTime,
    User,
)


class ForgeError(Exception):
    """An error answer, as Gitea gives it: JSON ``{"message","url"}`` (a 404 adds ``errors``), or, for
    some 403s and 404s, no body at all. Raised by business rules and HTTP handlers alike."""

    def __init__(self, status: int, message: str = "", *, empty: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.empty = empty


def by_name(labels: list[Label]) -> list[Label]:
    """An issue's labels without duplicates, in Gitea's order (by name)."""
    return sorted(dict.fromkeys(labels), key=lambda lb: lb.name)


@dataclass
class ReviewComment:
    path: str
    body: str
    line: int  # Gitea's convention: > 0 new file line, < 0 old file line


class Service:
    def __init__(self, state: State, site: Site, deliverer: Deliverer) -> None:
        self.state = state
        self.site = site
        self.deliverer = deliverer
        self.render = Renderer(site, state)
        self._git_locks: dict[int, asyncio.Lock] = {}

    def notify(self, repo: Repo, event_type: str, payload: JSON) -> list[Delivery]:
        hooks = [h for h in self.state.hooks if h.repo is repo]
        return self.deliverer.dispatch(hooks, event_type, payload)

    def git_lock(self, repo: Repo) -> asyncio.Lock:
        """Serialises ref changes per repo, so a push's before/after snapshot is its own."""
        return self._git_locks.setdefault(repo.id, asyncio.Lock())

    # --- repositories ------------------------------------------------------------------------------

    def create_repo(self, owner: User, name: str, files: dict[str, str | bytes | None], *,
                    default_branch: str, parent: Repo | None = None, **fields: object) -> Repo:
        repo = self.state.add_repo(owner, name, default_branch=default_branch, parent=parent, **fields)
        if parent is not None:
            git.clone_bare(parent.path, repo.path)
            parent.forks_count += 1
        else:
            git.init_bare(repo.path, default_branch)
            if files:
                author = (owner.full_name or owner.login, owner.email or f"{owner.login}@example.com")
                git.commit_files(repo.path, default_branch, files, "Initial commit\n", author=author,
                                 when=self.state.clock.now(), parent=None)
        repo.branches = git.branches(repo.path)
        return repo

    async def commit(self, repo: Repo, branch: str, files: dict[str, str | bytes | None], message: str,
                     author: User, *, start_point: str | None = None) -> str:
        """A commit made on the server side (web editor style); returns its sha. A new branch starts at
        ``start_point`` (a branch or sha), by default the default branch."""
        async with self.git_lock(repo):
            old = repo.branches.get(branch, git.ZERO_SHA)
            if branch in repo.branches:
                parent: str | None = repo.branches[branch]
            elif start_point:
                parent = repo.branches.get(start_point, start_point)
            else:
                parent = repo.branches.get(repo.default_branch)  # None in an empty repo: a root commit
            sha = await asyncio.to_thread(
                git.commit_files, repo.path, branch, files, message if message.endswith("\n") else message + "\n",
                author=(author.full_name or author.login, author.email), when=self.state.clock.now(),
                parent=parent, old=old)
            repo.branches = await asyncio.to_thread(git.branches, repo.path)
        await self.on_push(repo, author, {branch: (old, sha)})
        return sha

    async def on_push(self, repo: Repo, pusher: User, changed: dict[str, tuple[str, str]]) -> list[Delivery]:
        """After refs moved: sync open pulls whose head moved, refresh those whose base moved."""
        repo.updated_at = self.state.clock.now()
        deliveries: list[Delivery] = []
        for branch, (_, new) in changed.items():
            if new == git.ZERO_SHA:
                continue
            for pull in self.state.open_pulls_with_head(repo, branch):
                deliveries += await self.sync_pull(pull, pusher)
            for pull in self.state.pulls(repo):
                if pull.issue.state == "open" and pull.base_branch == branch:
                    await self._refresh_pull(pull)
        return deliveries

    # --- issues, labels, comments ------------------------------------------------------------------

    def create_issue(self, repo: Repo, poster: User, title: str, body: str,
                     labels: list[Label]) -> tuple[Issue, list[Delivery]]:
        issue = self.state.add_issue(repo, poster, title, body)
        self._label_timeline(issue, poster, [], labels)
        issue.labels = by_name(labels)
        event, payload = issue_event(self.render, "opened", issue, poster)
        return issue, self.notify(repo, event, payload)

    def set_state(self, issue: Issue, doer: User, state: str) -> list[Delivery]:
        """Close or reopen an issue or pull."""
        if issue.state == state:
            return []
        self._move(issue, doer, state, "close" if state == "closed" else "reopen")
        event, payload = issue_event(self.render, "closed" if state == "closed" else "reopened", issue, doer)
        return self.notify(issue.repo, event, payload)

    def _move(self, issue: Issue, doer: User, state: str, timeline: str) -> None:
        """The state change itself: timestamps, the repo's open counters, a timeline entry."""
        now = self.state.clock.now()
        issue.state, issue.updated_at = state, now
        issue.closed_at = now if state == "closed" else None
        delta = -1 if state == "closed" else 1
        if issue.pull is not None:
            issue.repo.open_pr_counter += delta
        else:
            issue.repo.open_issues_count += delta
        self.state.add_comment(issue, doer, "", type=timeline)

    def change_labels(self, issue: Issue, doer: User, labels: list[Label], *, cleared: bool = False) -> list[Delivery]:
        """Make ``labels`` the issue's set. Gitea notifies even when nothing changed."""
        self._label_timeline(issue, doer, issue.labels, labels)
        issue.labels = by_name(labels)
        issue.updated_at = self.state.clock.now()
        event, payload = issue_event(self.render, "label_cleared" if cleared else "label_updated", issue, doer,
                                     label=True)
        return self.notify(issue.repo, event, payload)

    def _label_timeline(self, issue: Issue, doer: User, before: list[Label], after: list[Label]) -> None:
        """One ``label`` timeline entry per added ("1") or removed ("") label; they take comment ids."""
        for label in dict.fromkeys(before + after):
            if (label in before) != (label in after):
                self.state.add_comment(issue, doer, "1" if label in after else "", type="label")

    def create_comment(self, issue: Issue, doer: User, body: str) -> tuple[Comment, list[Delivery]]:
        comment = self.state.add_comment(issue, doer, body)
        event, payload = comment_event(self.render, "created", comment, doer)
        return comment, self.notify(issue.repo, event, payload)

    def edit_comment(self, comment: Comment, doer: User, body: str) -> list[Delivery]:
        old = comment.body
        comment.body, comment.updated_at = body, self.state.clock.now()
        event, payload = comment_event(self.render, "edited", comment, doer, {"body": {"from": old}})
        return self.notify(comment.issue.repo, event, payload)

    def delete_comment(self, comment: Comment, doer: User) -> list[Delivery]:
        self.state.delete_comment(comment)
        event, payload = comment_event(self.render, "deleted", comment, doer)
        return self.notify(comment.issue.repo, event, payload)

    # --- pull requests -----------------------------------------------------------------------------

    async def create_pull(self, base_repo: Repo, poster: User, head_repo: Repo, head_branch: str,
                          base_branch: str, title: str, body: str,
                          labels: list[Label]) -> tuple[Pull, list[Delivery]]:
        for pull in self.state.open_pulls_with_head(head_repo, head_branch):
            if pull.issue.repo is base_repo and pull.base_branch == base_branch:
                raise ForgeError(409, f"pull request already exists for these targets [id: {pull.id}, "
                                        f"issue_id: {pull.issue.id}, head_repo_id: {head_repo.id}, "
                                        f"base_repo_id: {base_repo.id}, head_branch: {head_branch}, "
                                        f"base_branch: {base_branch}]")
        issue = self.state.add_issue(base_repo, poster, title, body)
        self._label_timeline(issue, poster, [], labels)
        issue.labels = by_name(labels)
        head_sha = head_repo.branches[head_branch]
        pull = self.state.add_pull(issue, head_repo, head_branch, base_branch, head_sha, "")
        await self._refresh_pull(pull)
        payload = pull_payload(self.render, "opened", pull, poster,
                               repo_mode=self.state.access(poster, base_repo))
        return pull, self.notify(base_repo, "pull_request", payload)

    async def sync_pull(self, pull: Pull, pusher: User) -> list[Delivery]:
        """A push moved the head: follow it, mark reviews stale and send ``pull_request_sync``."""
        pull.head_sha = pull.head_repo.branches[pull.head_branch]
        pull.issue.updated_at = self.state.clock.now()
        for review in self.state.reviews.values():
            if review.issue is pull.issue and review.commit_id != pull.head_sha:
                review.stale = True
        await self._refresh_pull(pull)
        # The notifier hard-codes owner permission for this one.
        payload = pull_payload(self.render, "synchronized", pull, pusher, repo_mode=Access.OWNER)
        return self.notify(pull.issue.repo, "pull_request_sync", payload)

    async def _refresh_pull(self, pull: Pull) -> None:
        """refs/pull/N/head, merge base and diff stats, recomputed from git."""
        base = pull.issue.repo
        ref = f"refs/pull/{pull.number}/head"
        if pull.head_repo is base:
            await asyncio.to_thread(git.update_ref, base.path, ref, pull.head_sha)
        else:
            await asyncio.to_thread(git.fetch_ref, base.path, pull.head_repo.path,
                                    f"refs/heads/{pull.head_branch}", ref)
        base_sha = base.branches.get(pull.base_branch)
        if base_sha is None:
            return  # the base branch is gone: keep what was computed last
        pull.merge_base = await asyncio.to_thread(git.merge_base, base.path, base_sha, pull.head_sha)
        files = await asyncio.to_thread(git.diff_files, base.path, pull.merge_base or base_sha, pull.head_sha)
        pull.changed_files = len(files)
        pull.additions = sum(f.additions for f in files)
        pull.deletions = sum(f.deletions for f in files)

    async def pull_files(self, pull: Pull) -> list[git.FileChange]:
        return await asyncio.to_thread(git.diff_files, pull.issue.repo.path, pull.merge_base, pull.head_sha)

    async def merge_pull(self, pull: Pull, doer: User) -> tuple[str, list[Delivery]]:
        """A merge commit on the base branch, then ``pull_request`` closed with ``merged: true`` (the
        notifier's MergePullRequest: the doer's permission)."""
        base = pull.issue.repo
        async with self.git_lock(base):
            old = base.branches[pull.base_branch]
            sha = await asyncio.to_thread(git.merge, base.path, pull.base_branch, old, pull.head_sha,
                                          f"Merge pull request '{pull.issue.title}' (#{pull.number})\n",
                                          author=(doer.full_name or doer.login, doer.email),
                                          when=self.state.clock.now())
            base.branches = await asyncio.to_thread(git.branches, base.path)
        pull.has_merged, pull.merged_by, pull.merge_commit_sha = True, doer, sha
        pull.merged_at = self.state.clock.now()
        self._move(pull.issue, doer, "closed", "merge_pull")
        payload = pull_payload(self.render, "closed", pull, doer, repo_mode=self.state.access(doer, base))
        deliveries = self.notify(base, "pull_request", payload)
        await self.on_push(base, doer, {pull.base_branch: (old, sha)})
        return sha, deliveries

    def create_review(self, pull: Pull, doer: User, state: str, body: str, commit_id: str,
                      comments: list[ReviewComment]) -> tuple[Review, list[Delivery]]:
        issue = pull.issue
        now = self.state.clock.now()
        review = next((r for r in self.state.reviews.values()
                       if r.issue is issue and r.reviewer is doer and r.state == "PENDING"), None)
        if review is None:
            review = Review(id=self.state.next_id("review"), issue=issue, reviewer=doer, state=state, body=body,
                            commit_id=commit_id, created_at=now, updated_at=now)
            self.state.reviews[review.id] = review
        review.state, review.body, review.commit_id, review.updated_at = state, body, commit_id, now
        for item in comments:
            code = self.state.add_comment(issue, doer, item.body, type="code")
            code.review, code.path, code.line, code.commit_id = review, item.path, item.line, commit_id
            review.comments.append(code)
        if state == "PENDING":
            return review, []
        writer = self.state.access(doer, issue.repo) >= Access.WRITE
        review.official = writer and state in ("APPROVED", "REQUEST_CHANGES")
        review.comment_id = self.state.add_comment(issue, doer, body, type="review").id
        event = REVIEW_EVENTS[state]
        payload = pull_payload(self.render, "reviewed", pull, doer,
                               repo_mode=self.state.access(issue.poster, issue.repo),
                               review={"type": event, "content": body})
        return review, self.notify(issue.repo, event, payload)

    # --- reactions, statuses, time -----------------------------------------------------------------

    def react(self, issue: Issue, comment: Comment | None, user: User, content: str) -> tuple[Reaction, bool]:
        """(reaction, created). An existing identical reaction is returned as is."""
        if content not in REACTIONS:
            raise ForgeError(403, f"'{content}' is not an allowed reaction")
        for reaction in self.state.reactions:
            if (reaction.issue is issue and reaction.comment is comment and reaction.user is user
                    and reaction.content == content):
                return reaction, False
        reaction = Reaction(id=self.state.next_id("reaction"), user=user, content=content,
                            created_at=self.state.clock.now(), issue=issue, comment=comment)
        self.state.reactions.append(reaction)
        return reaction, True

    def unreact(self, issue: Issue, comment: Comment | None, user: User, content: str) -> None:
        self.state.reactions = [r for r in self.state.reactions
                                if not (r.issue is issue and r.comment is comment and r.user is user
                                        and r.content == content)]

    def create_status(self, repo: Repo, sha: str, creator: User, state: str, target_url: str, description: str,
                      context: str) -> Status:
        index = 1 + sum(1 for s in self.state.statuses if s.repo is repo and s.sha == sha)
        status = Status(index=index, repo=repo, sha=sha, state=state, target_url=target_url,
                        description=description, context=context, creator=creator,
                        created_at=self.state.clock.now())
        self.state.statuses.append(status)
        return status

    def start_stopwatch(self, issue: Issue, user: User) -> None:
        """One stopwatch per user: one running elsewhere is stopped and booked first."""
        running = self.state.stopwatches.get(user.id)
        if running is not None and running.issue is issue:
            raise ForgeError(409, "Cannot start a stopwatch again if it already exists")
        if running is not None:
            self.state.finish_stopwatch(running)
        self.state.stopwatches[user.id] = Stopwatch(user=user, issue=issue, created=self.state.clock.now())
        self.state.add_comment(issue, user, "", type="start_tracking")

    def stop_stopwatch(self, issue: Issue, user: User) -> TrackedTime:
        running = self.state.stopwatches.get(user.id)
        if running is None or running.issue is not issue:
            raise ForgeError(409, "Cannot stop a non-existent stopwatch")
        return self.state.finish_stopwatch(running)

    def cancel_stopwatch(self, issue: Issue, user: User) -> None:
        running = self.state.stopwatches.get(user.id)
        if running is None or running.issue is not issue:
            raise ForgeError(409, "Cannot cancel a non-existent stopwatch")
        del self.state.stopwatches[user.id]
        self.state.add_comment(issue, user, "", type="cancel_tracking")
