"""Sans-I/O webhook parsing, after ``gidgethub.sansio``: headers + raw body + secret → ``Event``.

Gitea signs the raw bytes with HMAC-SHA256 and sends the hex digest bare in ``X-Gitea-Signature``
(Forgejo also in ``X-Forgejo-Signature``); ``X-Hub-Signature-256`` carries it with a ``sha256=``
prefix. The signature is checked before the body is parsed, in constant time.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    """One verified webhook delivery."""

    event_type: str
    delivery_id: str
    data: dict[str, Any]

    @property
    def action(self) -> str:
        return str(self.data.get("action", ""))

    @classmethod
    def from_http(cls, headers: Mapping[str, str], body: bytes, *, secret: str) -> Event:
        """Verify and parse a delivery; raises ``BadSignature`` or ``BadRequest``."""
        event_type, delivery_id = verify(headers, body, secret=secret)
        return cls(event_type=event_type, delivery_id=delivery_id, data=parse_body(body))


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


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(f"body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest("body is not a JSON object")
    return data


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
