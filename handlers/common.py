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
    author: str = ""  # who opened it: only a writer's title may become a task

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


async def writes(services: Services, target: Target, login: str) -> bool | None:
    """Live check that ``login`` has write access; None when the Forge refused to say (403), which
    counts as no. Transient Forge errors propagate, so the delivery is handled again later."""
    try:
        return await can_write(services.forge, services.settings, target.owner, target.name, login)
    except ForgeError as e:
        if e.transient or e.status != 403:
            raise
        log.error("the Forge refused the permission check on %s/%s: %s", target.owner, target.name, e)
        return None


def refusal(target: Target, login: str, action: str, allowed: bool | None) -> str:
    """What the bot says to ``login`` when ``allowed`` (from ``writes``) is not True."""
    if allowed is None:
        return sentences.permission_check_refused(target.repo.full_name)
    log.info("refused %s on %s#%s: no write access", login, target.repo.full_name, target.number)
    return sentences.refused(login, target.repo.full_name, action)


async def may_write(services: Services, target: Target, login: str, action: str) -> bool:
    """Live check that ``login`` has write access; fails closed, and says why once per issue."""
    allowed = await writes(services, target, login)
    if allowed:
        return True
    key = f"permcheck:{target.repo.id}:{target.number}" if allowed is None else \
        f"refused:{target.repo.id}:{target.number}:{login}"
    await reply(services, target, key, refusal(target, login, action, allowed))
    return False


async def _title_as_task(services: Services, target: Target, login: str) -> str:
    """The issue's title when its author has write access, else "": an outsider's text never
    becomes the task (the prompt then shows their issue as untrusted data)."""
    if target.author and (target.author == login or await writes(services, target, target.author)):
        return target.title
    return ""


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
        task=task or await _title_as_task(services, target, login), trigger=trigger, requested_by=login, review=review, comment_id=comment_id,
    )
    run = await services.store.request_run(
        request, trigger_key=key, delivery_id=delivery_id, unless_active=unless_active
    )
    if run is not None:
        log.info("queued run %s: %s on %s#%s by %s", run.id, spec, target.repo.full_name, target.number, login)
