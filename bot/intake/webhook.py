"""Sans-I/O webhook parsing, after ``gidgethub.sansio``: ``verify`` checks headers + raw body +
secret and names the event type, then ``Event.parse`` reads the body (the app parses only the event
types it handles).

Gitea signs the raw bytes with HMAC-SHA256 and sends the hex digest bare in ``X-Gitea-Signature``
(Forgejo also in ``X-Forgejo-Signature``); ``X-Hub-Signature-256`` carries it with a ``sha256=``
prefix. The signature is checked before the body is parsed, in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from bot.intake.payloads import PAYLOADS, Payload

SIGNATURE_HEADERS = ("x-gitea-signature", "x-forgejo-signature", "x-gogs-signature")
DELIVERY_HEADERS = ("x-gitea-delivery", "x-forgejo-delivery", "x-gogs-delivery", "x-github-delivery")
EVENT_TYPE_HEADERS = ("x-gitea-event-type", "x-forgejo-event-type", "x-gogs-event-type", "x-github-event-type")


class WebhookError(Exception):
    """A delivery the bot refuses; ``status`` is the HTTP answer."""

    status = 400


class BadSignature(WebhookError):
    status = 401


class BadRequest(WebhookError):
    status = 400


@dataclass(frozen=True)
class Event:
    """One verified webhook delivery, its body parsed into the loose model of its event type."""

    event_type: str
    delivery_id: str
    payload: Payload

    @property
    def action(self) -> str:
        return self.payload.action

    @classmethod
    def parse(cls, event_type: str, delivery_id: str, body: bytes) -> Event:
        """Parse and check the shape in one pass over the bytes; ``BadRequest`` says what is wrong."""
        try:
            payload = PAYLOADS.get(event_type, Payload).model_validate_json(body)
        except ValidationError as e:
            raise BadRequest(_first_error(e, event_type)) from None
        return cls(event_type, delivery_id, payload)


def verify(headers: Mapping[str, str], body: bytes, *, secret: str) -> tuple[str, str]:
    """Check the signature and the headers without parsing the body; returns (event type, delivery id)."""
    lower = {k.lower(): v for k, v in headers.items()}
    verify_signature(lower, body, secret)
    event_type = _first(lower, EVENT_TYPE_HEADERS)
    delivery_id = _first(lower, DELIVERY_HEADERS)
    if not event_type:
        raise BadRequest("missing X-Gitea-Event-Type header")
    if not delivery_id or len(delivery_id) > 100:
        raise BadRequest("missing or oversized X-Gitea-Delivery header")
    content_type = lower.get("content-type", "application/json").split(";")[0].strip()
    if content_type != "application/json":
        raise BadRequest(f"content type {content_type!r} is not supported: configure the hook as JSON")
    return event_type, delivery_id


def _first_error(e: ValidationError, event_type: str) -> str:
    err = e.errors()[0]
    if err["type"] == "json_invalid":
        return f"body is not JSON: {err['ctx'].get('error', err['msg'])}"
    if err["type"] == "model_type" and not err["loc"]:
        return "body is not a JSON object"
    return f"unexpected {event_type} payload: {'.'.join(map(str, err['loc']))}: {err['msg']}"


def sign(body: bytes, secret: str) -> str:
    return hmac.digest(secret.encode(), body, "sha256").hex()  # the one-shot C path


def verify_signature(headers: Mapping[str, str], body: bytes, secret: str) -> None:
    """Accept any of the signature headers Gitea and Forgejo send; all present must agree."""
    if not secret:
        raise BadSignature("no webhook secret configured")
    expected = sign(body, secret)
    given = [headers[h] for h in SIGNATURE_HEADERS if headers.get(h)]
    hub = headers.get("x-hub-signature-256", "")
    if hub:
        given.append(hub.removeprefix("sha256=") if hub.startswith("sha256=") else "")
    if not given:
        raise BadSignature("missing signature header")
    if not all(hmac.compare_digest(g.strip().lower().encode(), expected.encode()) for g in given):
        raise BadSignature("signature does not match")


def _first(headers: Mapping[str, str], names: tuple[str, ...]) -> str:
    return next((headers[n].strip() for n in names if headers.get(n)), "")
