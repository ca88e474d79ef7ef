"""Slash commands in new comments on issues and pull requests (edits never re-trigger).

Each command is keyed by the comment id and its line, so Gitea's Redeliver (same body, new
delivery id) never has a second effect. A comment gets at most one reply, whatever it holds (its
first ``MAX_COMMANDS`` commands act); a user without write access gets at most one reply per issue
and hour, so no one floods the Forge through the bot.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bot.report import sentences
from bot.runs.agents import known_agents
from bot.intake.commands import Command, parse
from bot.intake.payloads import IssueCommentPayload
from bot.intake.routing import Router
from bot.services import Services
from bot.store import CANCELLABLE, RETRYABLE
from bot.intake.webhook import Event

from handlers.common import Target, react, refusal, reply, request_run, writes

router = Router()


MAX_COMMANDS = 10  # per comment; the rest are ignored, and the reply says so
OUTSIDER_REPLY_WINDOW = 3600.0  # seconds: a user without write access gets one reply per issue in each


@dataclass
class Context:
    """One comment being handled; what its commands say is gathered into one reply."""

    event: Event
    services: Services
    target: Target
    login: str
    comment_id: int
    replies: list[str] = field(default_factory=list)
    _writer: bool | None = None
    _asked: bool = False

    def key(self, command: Command) -> str:
        return f"comment:{self.target.repo.id}:{self.comment_id}:{command.line}"

    async def reply(self, command: Command, body: str) -> None:
        self.replies.append(body)

    async def writer(self) -> bool | None:
        """Whether the commenter has write access (None: the Forge would not say), asked once."""
        if not self._asked:
            self._writer, self._asked = await writes(self.services, self.target, self.login), True
        return self._writer

    async def may_write(self, action: str) -> bool:
        allowed = await self.writer()
        if not allowed:
            self.replies.append(refusal(self.target, self.login, action, allowed))
        return bool(allowed)

    async def reply_key(self) -> str:
        """One reply per comment for writers; for others, one per issue and hour, whatever they post."""
        if await self.writer():
            return f"comment:{self.target.repo.id}:{self.comment_id}"
        window = int(time.time() // OUTSIDER_REPLY_WINDOW)
        return f"outsider:{self.target.repo.id}:{self.target.number}:{self.login}:{window}"

    async def send(self, *, ignored: bool) -> None:
        """The one reply to this comment, if its commands had anything to say."""
        if ignored:
            self.replies.append(sentences.commands_ignored(MAX_COMMANDS))
        if self.replies:
            body = "\n\n".join(dict.fromkeys(self.replies))  # a command said a thousand times is answered once
            await reply(self.services, self.target, await self.reply_key(), body)


@router.register("issue_comment", action="created")
@router.register("pull_request_comment", action="created")
async def on_comment(event: Event, services: Services) -> None:
    payload = IssueCommentPayload.model_validate(event.payload)  # the same object, not a copy
    commands = parse(payload.comment.body, limit=MAX_COMMANDS + 1)  # one more tells that some are left out
    if not commands:
        return
    pull = payload.pull_request if payload.is_pull else None
    target = Target(payload.repository, payload.issue.number, payload.issue.title, pull, payload.issue.user.login)
    ctx = Context(event, services, target, payload.comment.user.login, payload.comment.id)
    for command in commands[:MAX_COMMANDS]:
        if command.error:
            await ctx.reply(command, sentences.parse_error(command.error))
        else:
            await ACTIONS[command.name](ctx, command)
    await ctx.send(ignored=len(commands) > MAX_COMMANDS)


async def dispatch(ctx: Context, command: Command) -> None:
    if await ctx.may_write("dispatch agents"):  # 👀 says the command was taken: not to those refused
        await react(ctx.services, ctx.target, ctx.comment_id, "eyes")
        await _request(ctx, command, command.agent_spec, review=False)


async def review(ctx: Context, command: Command) -> None:
    if not ctx.target.is_pull:
        await ctx.reply(command, sentences.review_needs_pull())
        return
    if await ctx.may_write("request reviews"):
        await react(ctx.services, ctx.target, ctx.comment_id, "eyes")
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
    # Once per command: a replay of the comment (a new delivery id) cancels nothing, not even runs
    # queued since. The runner stops the containers of what it sees cancelled.
    await ctx.services.store.cancel([run.id for run in runs], reason=f"cancelled by @{ctx.login}",
                                    trigger_key=ctx.key(command))


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
    key = ctx.key(command) if await ctx.writer() else await ctx.reply_key()  # outsiders: rate-limited
    await ctx.services.store.enqueue(
        f"status:{key}", "status", t.owner, t.name, t.number, {"login": ctx.login}, run_id=runs[-1].id
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
