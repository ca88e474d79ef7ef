"""Pull request lifecycle: a closed or merged pull request ends the runs still working on it."""

from __future__ import annotations

from bot.intake.payloads import PullRequestPayload
from bot.intake.routing import Router
from bot.services import Services
from bot.store import CANCELLABLE
from bot.intake.webhook import Event

router = Router()


@router.register("pull_request", action="closed")
async def closed(event: Event, services: Services) -> None:
    payload = PullRequestPayload.model_validate(event.payload)  # the same object, not a copy
    runs = await services.store.runs(
        states=CANCELLABLE,
        owner=payload.repository.owner_login,
        repo=payload.repository.name,
        number=payload.pull_request.number,
    )
    for run in runs:  # the runner stops the containers of what it sees cancelled
        await services.store.transition(run.id, "cancelled", reason="the pull request was closed")
