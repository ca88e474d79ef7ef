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
    # Once per closing (its time is in the key): a replay of this delivery cancels nothing, not even
    # runs requested after the pull request was reopened. The runner stops the containers.
    pull = payload.pull_request
    await services.store.cancel(
        [run.id for run in runs], reason="the pull request was closed",
        trigger_key=f"closed:{payload.repository.id}:{pull.number}:{pull.updated_at}",
    )
