"""Slash commands in new comments on issues and pull requests (edits never re-trigger).

Each command is keyed by the comment id and its line, so Gitea's Redeliver (same body, new
delivery id) never has a second effect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.report import sentences
from bot.runs.agents import known_agents
from bot.intake.commands import Command, parse
from bot.intake.payloads import IssueCommentPayload
from bot.intake.routing import Router
from bot.services import Services
from bot.store import CANCELLABLE, RETRYABLE
from bot.intake.webhook import Event

from handlers.common import Target, may_write, react, reply, request_run

router = Router()


@dataclass(frozen=True)
class Context:
    event: Event
    services: Services
    target: Target
    login: str
    comment_id: int

    def key(self, command: Command) -> str:
        return f"comment:{self.target.repo.id}:{self.comment_id}:{command.line}"

    async def reply(self, command: Command, body: str) -> None:
        await reply(self.services, self.target, self.key(command), body)

    async def may_write(self, action: str) -> bool:
        return await may_write(self.services, self.target, self.login, action)


@router.register("issue_comment", action="created")
@router.register("pull_request_comment", action="created")
async def on_comment(event: Event, services: Services) -> None:
    payload = IssueCommentPayload.model_validate(event.payload)  # the same object, not a copy
    commands = parse(payload.comment.body)
    if not commands:
        return
    pull = payload.pull_request if payload.is_pull else None
    target = Target(payload.repository, payload.issue.number, payload.issue.title, pull)
    ctx = Context(event, services, target, payload.comment.user.login, payload.comment.id)
    for command in commands:
        if command.error:
            await ctx.reply(command, sentences.parse_error(command.error))
        else:
            await ACTIONS[command.name](ctx, command)


async def dispatch(ctx: Context, command: Command) -> None:
    await react(ctx.services, ctx.target, ctx.comment_id, "eyes")
    if await ctx.may_write("dispatch agents"):
        await _request(ctx, command, command.agent_spec, review=False)


async def review(ctx: Context, command: Command) -> None:
    if not ctx.target.is_pull:
        await ctx.reply(command, sentences.review_needs_pull())
        return
    await react(ctx.services, ctx.target, ctx.comment_id, "eyes")
    if await ctx.may_write("request reviews"):
        await _request(ctx, command, command.agent_spec or ctx.services.settings.review_agent, review=True)


async def _request(ctx: Context, command: Command, spec: str, *, review: bool) -> None:
    await request_run(
        ctx.services,
        ctx.target,
        spec=spec,
        task=command.text,
        trigger="comment",
        login=ctx.login,
        key=ctx.key(command),
        delivery_id=ctx.event.delivery_id,
        comment_id=ctx.comment_id,
        review=review,
    )


async def cancel(ctx: Context, command: Command) -> None:
    if not await ctx.may_write("cancel runs"):
        return
    runs = await _runs(ctx, CANCELLABLE)
    if not runs:
        await ctx.reply(command, sentences.nothing_to("cancel"))
        return
    await react(ctx.services, ctx.target, ctx.comment_id, "eyes")
    for run in runs:  # the runner stops the containers of what it sees cancelled
        await ctx.services.store.transition(
            run.id, "cancelled", reason=f"cancelled by @{ctx.login}", trigger_key=f"{ctx.key(command)}:{run.id}"
        )


async def retry(ctx: Context, command: Command) -> None:
    if not await ctx.may_write("retry runs"):
        return
    runs = await _runs(ctx, RETRYABLE)
    if not runs:
        await ctx.reply(command, sentences.nothing_to("retry"))
        return
    await react(ctx.services, ctx.target, ctx.comment_id, "eyes")
    request = runs[-1].again(trigger="retry", requested_by=ctx.login, comment_id=ctx.comment_id)
    await ctx.services.store.request_run(request, trigger_key=ctx.key(command), delivery_id=ctx.event.delivery_id)


async def answer(ctx: Context, command: Command) -> None:
    if not await ctx.may_write("answer the agent"):
        return
    blocked = await _runs(ctx, ("blocked",))
    if not blocked:
        await ctx.reply(command, sentences.nothing_to("answer"))
        return
    await react(ctx.services, ctx.target, ctx.comment_id, "eyes")
    await ctx.services.store.transition(
        blocked[-1].id, "queued", reason=f"answered by @{ctx.login}", trigger_key=ctx.key(command),
        answer=command.text,
    )


async def status(ctx: Context, command: Command) -> None:
    """Answered visibly, always: the latest run's status comment is shown afresh (or again)."""
    runs = await _runs(ctx, None)
    if not runs:
        await ctx.reply(command, sentences.nothing_to("report on"))
        return
    t = ctx.target
    await ctx.services.store.enqueue(
        f"status:{ctx.key(command)}", "status", t.owner, t.name, t.number, {"login": ctx.login}, run_id=runs[-1].id
    )


async def help_(ctx: Context, command: Command) -> None:
    settings = ctx.services.settings
    await ctx.reply(command, sentences.help_text(known_agents(settings), settings.label_prefix))


async def _runs(ctx: Context, states: tuple[str, ...] | None) -> list:
    t = ctx.target
    return await ctx.services.store.runs(states=states, owner=t.owner, repo=t.name, number=t.number)


ACTIONS: dict[str, Callable[[Context, Command], Awaitable[None]]] = {
    "dispatch": dispatch,
    "review": review,
    "cancel": cancel,
    "retry": retry,
    "answer": answer,
    "status": status,
    "help": help_,
}
