"""Signature checks and parsing of the sans-I/O webhook core, on the example deliveries."""

import json

import pytest

from bot.intake.payloads import PAYLOADS
from bot.intake.webhook import BadRequest, BadSignature, Event, sign, verify

from .helpers import EXAMPLES, SECRET, example


def received(headers: dict[str, str], body: bytes, *, secret: str) -> Event:
    """What the app does with a delivery: check the signature and headers, then parse the body."""
    return Event.parse(*verify(headers, body, secret=secret), body)


@pytest.mark.parametrize("name", EXAMPLES)
def test_every_example_verifies_and_parses(name):
    headers, body = example(name)
    event = received(headers, body, secret=SECRET)
    assert event.delivery_id == headers.get("X-Gitea-Delivery")
    assert event.event_type == headers["X-Gitea-Event-Type"]
    assert type(event.payload) is PAYLOADS[event.event_type]
    assert event.action == json.loads(body)["action"]


@pytest.mark.parametrize(
    "header", ["X-Gitea-Signature", "X-Forgejo-Signature", "X-Gogs-Signature", "X-Hub-Signature-256"]
)
def test_each_signature_header_alone_is_enough(header):
    headers, body = example("issue-comment-created.json")
    digest = sign(body, SECRET)
    only = {k: v for k, v in headers.items() if "signature" not in k.lower()}
    only[header] = f"sha256={digest}" if header == "X-Hub-Signature-256" else digest
    assert received(only, body, secret=SECRET).payload.comment.id == 512


def test_header_names_match_case_insensitively():
    headers, body = example("issues-labeled.json")
    lower = {k.lower(): v for k, v in headers.items()}
    assert received(lower, body, secret=SECRET).event_type == "issue_label"


@pytest.mark.parametrize(
    "mutate",
    [
        lambda h, b: (h, b.replace(b"/time start", b"/time stop!")),  # tampered body
        lambda h, b: (h, b + b" "),  # one byte more
        lambda h, b: ({k: v for k, v in h.items() if "ignature" not in k}, b),  # missing
        lambda h, b: ({**h, "X-Gitea-Signature": "0" * 64}, b),  # wrong digest
        lambda h, b: ({**h, "X-Hub-Signature-256": h["X-Gitea-Signature"]}, b),  # hub without prefix
        lambda h, b: ({k: "" if "ignature" in k else v for k, v in h.items()}, b),  # Gitea's unsigned form
        lambda h, b: ({**h, "X-Gogs-Signature": "0" * 64}, b),  # one header disagrees
    ],
)
def test_bad_signatures_are_refused(mutate):
    headers, body = mutate(*example("issue-comment-created.json"))
    with pytest.raises(BadSignature):
        received(headers, body, secret=SECRET)


def test_wrong_secret_is_refused():
    headers, body = example("issue-comment-created.json")
    with pytest.raises(BadSignature):
        received(headers, body, secret="not-the-secret")


def test_no_secret_means_no_delivery_verifies():
    headers, body = example("issue-comment-created.json")
    with pytest.raises(BadSignature):
        received(headers, body, secret="")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "body is not JSON"),
        (b"[1, 2]", "body is not a JSON object"),
        (b"\xff\xfe", "body is not JSON"),
        (b"", "body is not JSON"),
        (b'{"action": "opened", "number": 1}', "unexpected issues payload: sender: Field required"),
    ],
)
def test_signed_garbage_is_a_bad_request(body, reason):
    headers = {"X-Gitea-Event-Type": "issues", "X-Gitea-Delivery": "d1", "X-Gitea-Signature": sign(body, SECRET)}
    with pytest.raises(BadRequest, match=f"^{reason}"):
        received(headers, body, secret=SECRET)


def test_form_content_type_is_a_bad_request():
    headers, body = example("issue-comment-created.json")
    with pytest.raises(BadRequest, match="JSON"):
        received({**headers, "Content-Type": "application/x-www-form-urlencoded"}, body, secret=SECRET)


def test_pull_request_comment_routes_on_event_type_not_event():
    headers, body = example("pull-request-comment-created.json")
    event = received(headers, body, secret=SECRET)
    assert headers["X-Gitea-Event"] == "issue_comment"
    assert event.event_type == "pull_request_comment"
    payload = event.payload
    assert payload.is_pull and payload.pull_request is not None and payload.pull_request.is_fork
