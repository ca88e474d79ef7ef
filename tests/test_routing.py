"""Each shared example delivery reaches the handler meant for it, and only that one."""

import pytest

from bot.intake.payloads import Payload
from bot.intake.routing import Router
from bot.intake.webhook import Event, verify
from handlers import comments, labels, pulls, router

from .helpers import SECRET, example

EXPECTED = {
    "issues-labeled.json": [labels.issue_labels],
    "issue-comment-created.json": [comments.on_comment],
    "pull-request-comment-created.json": [comments.on_comment],
    "pull-request-comment-created.forgejo.json": [comments.on_comment],
    "pull-request-opened.json": [labels.pull_labels],
    "pull-request-synchronized.json": [],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_examples_route_to_their_handler(name):
    headers, body = example(name)
    event = Event.parse(*verify(headers, body, secret=SECRET), body)
    assert router.fetch(event) == EXPECTED[name]


def event(event_type: str, action: str) -> Event:
    return Event(event_type, "d", Payload(action=action, sender={"id": 1, "login": "alice"}))


def test_edits_and_unknown_types_reach_no_handler():
    assert router.fetch(event("issue_comment", "edited")) == []
    assert router.fetch(event("pull_request", "closed")) == [pulls.closed]
    assert not router.handles("push") and router.handles("issue_label")


async def test_router_dispatches_in_registration_order():
    seen = []
    r = Router()

    @r.register("issues")
    async def any_action(event, log):
        log.append("any")

    @r.register("issues", action="opened")
    async def opened(event, log):
        log.append("opened")

    await r.dispatch(event("issues", "opened"), seen)
    await r.dispatch(event("issues", "closed"), seen)
    assert seen == ["any", "opened", "any"]
