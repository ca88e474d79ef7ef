"""Label triggers: a ``dispatch:<agent>`` label on an issue or pull request requests a run.

Gitea sends ``label_updated`` with the full label set and no word of which label changed, so the
rule is stateless: a trigger label present requests a run unless one for that issue and agent is
already live. The trigger key includes the issue's ``updated_at`` so a redelivered event (same
body, new delivery id) requests nothing twice, while the label added again later does.

A trigger label is consumed once handled, whether a run was queued, one was live already, the
agent is unknown or the sender was refused: the label is removed by its id as it arrived (never a
name rebuilt from the agent and model), so a later edit of the issue's labels, even by a writer,
finds no trigger left. Every delivery carrying the label removes it, also one whose key is not
new (the label added again within the same second).
"""

from __future__ import annotations

from bot.intake.payloads import IssuePayload, Label, PullRequestPayload
from bot.intake.routing import Router
from bot.services import Services
from bot.intake.webhook import Event

from handlers.common import Target, may_write, remove_label, request_run

router = Router()


@router.register("issues", action="opened")
@router.register("issue_label", action="label_updated")
async def issue_labels(event: Event, services: Services) -> None:
    payload = IssuePayload.model_validate(event.payload)  # the same object, not a copy
    if payload.issue.pull_request is not None:
        return  # a PR's labels also arrive as pull_request_label
    target = Target(payload.repository, payload.issue.number, payload.issue.title, author=payload.issue.user.login)
    await _trigger(event, services, target, payload.issue.labels or [], payload.issue.updated_at, payload.sender.login)


@router.register("pull_request", action="opened")
@router.register("pull_request_label", action="label_updated")
async def pull_labels(event: Event, services: Services) -> None:
    payload = PullRequestPayload.model_validate(event.payload)  # the same object, not a copy
    pull = payload.pull_request
    target = Target(payload.repository, pull.number, pull.title, pull, author=pull.user.login)
    await _trigger(event, services, target, pull.labels or [], pull.updated_at, payload.sender.login)


async def _trigger(
    event: Event, services: Services, target: Target, labels: list[Label], updated_at: str, login: str
) -> None:
    prefix = services.settings.label_prefix
    triggers = [label for label in labels if label.name.startswith(prefix) and len(label.name) > len(prefix)]
    if not triggers:
        return
    allowed = await may_write(services, target, login, "dispatch agents")
    for label in triggers:
        spec = label.name[len(prefix):]
        key = f"label:{target.repo.id}:{target.number}:{spec}:{updated_at}"
        if allowed:
            await request_run(
                services,
                target,
                spec=spec,
                task="",
                trigger="label",
                login=login,
                key=key,
                delivery_id=event.delivery_id,
                unless_active=True,
            )
        # per delivery, not per key: a redelivery's removal of a label gone already is a no-op
        await remove_label(services, target, f"{key}:{event.delivery_id}", label.id)
