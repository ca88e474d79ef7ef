"""Webhooks as Gitea 1.26 sends them: payload assembly, headers and HMACs, and a per-hook delivery queue.

Which user's permission the ``repository`` carries, and whose eyes render the issue and pull request,
follows ``services/webhook/notifier.go`` (see the ``*_payload`` functions). Delivery is one real HTTP POST
per event and hook, 5 s timeout, no retry, one at a time per hook in event order, like Gitea's hook queue.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .gojson import marshal_indent
from .render import JSON, Renderer
from .state import Access, Comment, Hook, Issue, Pull, User

DELIVERY_TIMEOUT = 5.0  # [webhook] DELIVER_TIMEOUT default, seconds

# X-Gitea-Event-Type -> X-Gitea-Event, as Gitea 1.26's webhook sender groups them.
EVENT_GROUPS = {
    "issues": "issues",
    "issue_assign": "issues",
    "issue_label": "issues",
    "issue_milestone": "issues",
    "issue_comment": "issue_comment",
    "pull_request": "pull_request",
    "pull_request_assign": "pull_request",
    "pull_request_label": "pull_request",
    "pull_request_milestone": "pull_request",
    "pull_request_sync": "pull_request",
    "pull_request_review_request": "pull_request",
    "pull_request_comment": "issue_comment",
    "pull_request_review_approved": "pull_request_approved",
    "pull_request_review_rejected": "pull_request_rejected",
    "pull_request_review_comment": "pull_request_comment",
}

# Review state -> the event type of its single delivery. PENDING reviews send nothing.
REVIEW_EVENTS = {
    "APPROVED": "pull_request_review_approved",
    "REQUEST_CHANGES": "pull_request_review_rejected",
    "COMMENT": "pull_request_review_comment",
}


# --- payloads ------------------------------------------------------------------------------------


def issue_payload(r: Renderer, action: str, issue: Issue, doer: User, *, repo_mode: Access,
                  changes: JSON | None = None) -> JSON:
    """api.IssuePayload. ([FJ] declares ``label``, omitempty, and never fills it.)"""
    out: JSON = {"action": action, "number": issue.number}
    if changes:
        out["changes"] = changes
    out |= {
        "issue": r.issue(issue, doer),
        "repository": r.repo(issue.repo, repo_mode),
        "sender": r.user(doer, None),
        "commit_id": "",
    }
    return out


def comment_payload(r: Renderer, action: str, comment: Comment, doer: User,
                    changes: JSON | None = None) -> JSON:
    """api.IssueCommentPayload; the repository carries the doer's permission."""
    issue = comment.issue
    out: JSON = {"action": action, "issue": r.issue(issue, doer)}
    if issue.pull is not None:
        out["pull_request"] = r.pull(issue.pull, doer)
    out["comment"] = r.comment(comment)
    if changes:
        out["changes"] = changes
    out |= {
        "repository": r.repo(issue.repo, r.state.access(doer, issue.repo)),
        "sender": r.user(doer, None),
        "is_pull": issue.is_pull,
    }
    return out


def pull_payload(r: Renderer, action: str, pull: Pull, doer: User, *, repo_mode: Access,
                 changes: JSON | None = None, review: JSON | None = None) -> JSON:
    """api.PullRequestPayload."""
    out: JSON = {"action": action, "number": pull.number}
    if changes:
        out["changes"] = changes
    out |= {
        "pull_request": r.pull(pull, doer),
        "requested_reviewer": None,
        "repository": r.repo(pull.issue.repo, repo_mode),
        "sender": r.user(doer, None),
        "commit_id": "",
        "review": review,
    }
    return out


def issue_event(r: Renderer, action: str, issue: Issue, doer: User, *, label: bool = False,
                changes: JSON | None = None) -> tuple[str, JSON]:
    """(event type, payload) for an issue-level change, routed to the pull variant on a PR.

    Notifier rules: issue events carry the *poster's* permission, except a PR label change, which is
    hard-coded to owner.
    """
    poster_mode = r.state.access(issue.poster, issue.repo)
    if issue.pull is not None:
        mode = Access.OWNER if label else poster_mode
        event = "pull_request_label" if label else "pull_request"
        return event, pull_payload(r, action, issue.pull, doer, repo_mode=mode, changes=changes)
    event = "issue_label" if label else "issues"
    return event, issue_payload(r, action, issue, doer, repo_mode=poster_mode, changes=changes)


def comment_event(r: Renderer, action: str, comment: Comment, doer: User,
                  changes: JSON | None = None) -> tuple[str, JSON]:
    event = "pull_request_comment" if comment.issue.is_pull else "issue_comment"
    return event, comment_payload(r, action, comment, doer, changes)


# --- headers and signatures ----------------------------------------------------------------------


def signature(secret: str, body: bytes, digest: str = "sha256") -> str:
    """Lowercase hex HMAC of the exact body; Gitea sends "" when the hook has no secret."""
    if not secret:
        return ""
    return hmac.new(secret.encode(), body, getattr(hashlib, digest)).hexdigest()


def delivery_headers(event_type: str, body: bytes, *, secret: str, delivery_id: str, forgejo: bool = False,
                     target_type: str = "repository", authorization: str | None = None) -> dict[str, str]:
    """The complete header set of a delivery, in the order of the shared examples."""
    event = EVENT_GROUPS[event_type]
    sig256, sig1 = signature(secret, body), signature(secret, body, "sha1")
    headers = {"Content-Type": "application/json", "User-Agent": "Go-http-client/1.1"}
    if forgejo:
        headers |= {"X-Forgejo-Delivery": delivery_id, "X-Forgejo-Event": event,
                    "X-Forgejo-Event-Type": event_type, "X-Forgejo-Signature": sig256}
    headers |= {"X-Gitea-Delivery": delivery_id, "X-Gitea-Event": event, "X-Gitea-Event-Type": event_type,
                "X-Gitea-Signature": sig256}
    if not forgejo:
        headers["X-Gitea-Hook-Installation-Target-Type"] = target_type
    headers |= {
        "X-Gogs-Delivery": delivery_id,
        "X-Gogs-Event": event,
        "X-Gogs-Event-Type": event_type,
        "X-Gogs-Signature": sig256,
        "X-Hub-Signature": f"sha1={sig1}",
        "X-Hub-Signature-256": f"sha256={sig256}",
        "X-GitHub-Delivery": delivery_id,
        "X-GitHub-Event": event,
        "X-GitHub-Event-Type": event_type,
    }
    if not forgejo:
        headers["X-GitHub-Hook-Installation-Target-Type"] = target_type
    if authorization:
        headers["Authorization"] = authorization
    return headers


# --- delivery ------------------------------------------------------------------------------------


@dataclass(eq=False)
class Delivery:
    """One POST to one hook: what was sent and how the receiver answered."""

    id: str
    hook: Hook
    event_type: str
    headers: dict[str, str]
    body: bytes
    redelivery_of: str | None = None
    status: int | None = None  # the receiver's HTTP status; None if it never answered
    error: str | None = None  # "timeout", "connection refused", ...
    response_body: bytes = b""
    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future(),
                                       repr=False)

    @property
    def event(self) -> str:
        return EVENT_GROUPS[self.event_type]

    @property
    def payload(self) -> Any:
        return json.loads(self.body)

    @property
    def action(self) -> str | None:
        return self.payload.get("action")

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Deliverer:
    """Owns the HTTP session and one worker per hook, so deliveries to a hook never overlap or reorder."""

    def __init__(self, forgejo: bool) -> None:
        self.forgejo = forgejo
        self.deliveries: list[Delivery] = []
        self._queues: dict[int, asyncio.Queue[Delivery]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None

    def enqueue(self, hook: Hook, event_type: str, body: bytes, *, secret: str | None = None,
                redelivery_of: str | None = None) -> Delivery:
        """Sign and queue; ``secret`` overrides the hook's (to send a wrongly signed delivery)."""
        delivery_id = str(uuid.uuid4())
        headers = delivery_headers(event_type, body, secret=hook.secret if secret is None else secret,
                                   delivery_id=delivery_id, forgejo=self.forgejo, target_type=hook.target_type,
                                   authorization=hook.authorization)
        delivery = Delivery(id=delivery_id, hook=hook, event_type=event_type, headers=headers, body=body,
                            redelivery_of=redelivery_of)
        self.deliveries.append(delivery)
        self._queue(hook).put_nowait(delivery)
        return delivery

    def dispatch(self, hooks: list[Hook], event_type: str, payload: JSON) -> list[Delivery]:
        body = marshal_indent(payload)
        return [self.enqueue(hook, event_type, body) for hook in hooks if hook.wants(event_type)]

    def find(self, delivery_id: str) -> Delivery:
        for delivery in self.deliveries:
            if delivery.id == delivery_id:
                return delivery
        raise KeyError(delivery_id)

    async def drain(self) -> None:
        """Wait until every delivery queued so far has been answered (or failed)."""
        pending = [d.done for d in self.deliveries if not d.done.done()]
        if pending:
            await asyncio.gather(*pending)

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        for delivery in self.deliveries:
            if not delivery.done.done():
                delivery.error = delivery.error or "cancelled: fake forge closed"
                delivery.done.set_result(None)
        if self._session is not None:
            await self._session.close()

    def _queue(self, hook: Hook) -> asyncio.Queue[Delivery]:
        if hook.id not in self._queues:
            self._queues[hook.id] = asyncio.Queue()
            self._workers.append(asyncio.create_task(self._work(self._queues[hook.id]),
                                                     name=f"fakeforge-hook-{hook.id}"))
        return self._queues[hook.id]

    async def _work(self, queue: asyncio.Queue[Delivery]) -> None:
        while True:
            delivery = await queue.get()
            try:
                await self._post(delivery)
            except Exception as exc:  # a broken delivery must never stop the hook's queue
                delivery.error = f"{type(exc).__name__}: {exc}"
            finally:
                if not delivery.done.done():
                    delivery.done.set_result(None)

    async def _post(self, delivery: Delivery) -> None:
        if self._session is None:
            # Go's client: no Accept header, gzip offered; aiohttp's own headers are switched off.
            self._session = aiohttp.ClientSession(skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"))
        headers = dict(delivery.headers) | {"Accept-Encoding": "gzip"}
        try:
            async with self._session.post(delivery.hook.url, data=delivery.body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT),
                                          allow_redirects=False) as resp:
                delivery.response_body = await resp.read()
                delivery.status = resp.status
        except asyncio.TimeoutError:
            delivery.error = "timeout"
        except aiohttp.ClientError as exc:
            delivery.error = f"{type(exc).__name__}: {exc}"
