"""What the label and comment handlers share: replies, permission checks, run requests."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bot.report import sentences
from bot.runs.agents import UnknownAgent, known_agents, resolve, run_request
from bot.forge.client import ForgeError
from bot.forge.permissions import can_write
from bot.intake.payloads import PullRequest, Repository
from bot.services import Services

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Target:
    """The issue or pull request an event is about."""

    repo: Repository
    number: int
    title: str
    pull: PullRequest | None = None

    @property
    def is_pull(self) -> bool:
        return self.pull is not None

    @property
    def owner(self) -> str:
        return self.repo.owner_login

    @property
    def name(self) -> str:
        return self.repo.name


async def reply(services: Services, target: Target, key: str, body: str) -> None:
    """Queue a comment on the target, once per ``key``."""
    await services.store.enqueue(
        f"reply:{key}", "comment", target.owner, target.name, target.number,
        {"body": f"{body}\n\n{sentences.marker('reply', key)}"},
    )


async def react(services: Services, target: Target, comment_id: int, content: str) -> None:
    await services.store.enqueue(
        f"reaction:{comment_id}:{content}", "reaction", target.owner, target.name, target.number,
        {"comment_id": comment_id, "content": content},
    )


async def remove_label(services: Services, target: Target, key: str, label_id: int) -> None:
    """Queue the removal of one label from the target, by its id as it arrived, once per ``key``."""
    await services.store.enqueue(
        f"unlabel:{key}", "unlabel", target.owner, target.name, target.number, {"label_id": label_id}
    )


async def may_write(services: Services, target: Target, login: str, action: str) -> bool:
    """Live check that ``login`` has write access; fails closed, and says why once per issue.

    Transient Forge errors propagate, so the delivery is handled again later instead of refusing.
    """
    try:
        if await can_write(services.forge, services.settings, target.owner, target.name, login):
            return True
    except ForgeError as e:
        if e.transient or e.status != 403:
            raise
        log.error("the Forge refused the permission check on %s/%s: %s", target.owner, target.name, e)
        await reply(
            services, target, f"permcheck:{target.repo.id}:{target.number}",
            sentences.permission_check_refused(target.repo.full_name),
        )
        return False
    log.info("refused %s on %s#%s: no write access", login, target.repo.full_name, target.number)
    await reply(
        services, target, f"refused:{target.repo.id}:{target.number}:{login}",
        sentences.refused(login, target.repo.full_name, action),
    )
    return False


async def request_run(
    services: Services,
    target: Target,
    *,
    spec: str,
    task: str,
    trigger: str,
    login: str,
    key: str,
    delivery_id: str,
    comment_id: int | None = None,
    review: bool = False,
    unless_active: bool = False,
) -> None:
    """Resolve the agent and queue a run, or reply with what is wrong."""
    try:
        agent = resolve(services.settings, spec)
    except UnknownAgent:
        await reply(services, target, f"{key}:unknown", sentences.unknown_agent(spec, known_agents(services.settings)))
        return
    except ValueError as e:
        await reply(services, target, f"{key}:invalid", sentences.invalid_agent(spec, str(e)))
        return
    if target.pull is not None and target.pull.is_fork:
        await reply(services, target, f"fork:{target.repo.id}:{target.number}", sentences.fork_refused(target.number))
        return
    request = run_request(
        spec, agent, owner=target.owner, repo=target.name, number=target.number, is_pull=target.is_pull,
        task=task or target.title, trigger=trigger, requested_by=login, review=review, comment_id=comment_id,
    )
    run = await services.store.request_run(
        request, trigger_key=key, delivery_id=delivery_id, unless_active=unless_active
    )
    if run is not None:
        log.info("queued run %s: %s on %s#%s by %s", run.id, spec, target.repo.full_name, target.number, login)
