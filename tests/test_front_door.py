"""``POST /webhook`` over real HTTP: 401/400/413/202/200, durable dedup, and the bot's own events."""

import json
import sqlite3
import uuid

import aiohttp
import pytest

from bot.intake.webhook import sign

from .helpers import example


def deliveries(bot) -> list[tuple[str, str]]:
    with sqlite3.connect(bot.settings.database) as db:
        return db.execute("SELECT id, event_type FROM deliveries ORDER BY received_at").fetchall()


def signed(body: bytes, secret: str, event_type: str = "issue_comment", delivery: str | None = None) -> dict:
    return {
        "Content-Type": "application/json",
        "X-Gitea-Event": event_type,
        "X-Gitea-Event-Type": event_type,
        "X-Gitea-Delivery": delivery or str(uuid.uuid4()),
        "X-Gitea-Signature": sign(body, secret),
    }


async def post(bot, body: bytes, headers: dict) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session:
        async with session.post(bot.url + "/webhook", data=body, headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def bot(make_bot):
    return await make_bot(frozen=True, max_body_bytes=64 * 1024)


async def test_the_example_delivery_is_accepted_and_recorded(bot):
    headers, body = example("issue-comment-created.json")
    status, answer = await post(bot, body, {**headers, "X-Gitea-Signature": sign(body, bot.secret),
                                            "X-Hub-Signature-256": "sha256=" + sign(body, bot.secret),
                                            "X-Gogs-Signature": sign(body, bot.secret)})
    assert (status, answer["message"]) == (202, "accepted")
    assert deliveries(bot) == [(headers["X-Gitea-Delivery"], "issue_comment")]


@pytest.mark.parametrize("how", ["tampered", "wrong secret", "missing"])
async def test_bad_signatures_get_401_and_nothing_is_stored(bot, how):
    _, body = example("issue-comment-created.json")
    headers = signed(body, "wrong" if how == "wrong secret" else bot.secret)
    if how == "tampered":
        body = body.replace(b"/time start", b"/dispatch codex")
    if how == "missing":
        del headers["X-Gitea-Signature"]
    status, answer = await post(bot, body, headers)
    assert status == 401 and "signature" in answer["message"]
    assert deliveries(bot) == []


@pytest.mark.parametrize(
    "body, reason",
    [
        (b"{not json", "not JSON"),
        (b'["a list"]', "not a JSON object"),
        (json.dumps({"action": "created", "issue": {"number": 1}}).encode(), "unexpected issue_comment payload"),
    ],
)
async def test_malformed_bodies_get_400_with_a_reason(bot, body, reason):
    status, answer = await post(bot, body, signed(body, bot.secret))
    assert status == 400 and reason in answer["message"] and "\n" not in answer["message"]
    assert deliveries(bot) == []


async def test_oversized_bodies_get_413(bot):
    body = json.dumps({"pad": "x" * (65 * 1024)}).encode()
    status, _ = await post(bot, body, signed(body, bot.secret))
    assert status == 413
    assert deliveries(bot) == []


async def test_unhandled_event_types_get_202_and_are_ignored(bot):
    body = b'{"ref": "refs/heads/main"}'
    status, answer = await post(bot, body, signed(body, bot.secret, event_type="push"))
    assert status == 202 and "ignored" in answer["message"]
    assert deliveries(bot) == []


async def test_a_redelivered_id_gets_200_and_no_second_effect(bot):
    _, body = example("issue-comment-created.json")
    headers = signed(body, bot.secret)
    assert (await post(bot, body, headers))[0] == 202
    status, answer = await post(bot, body, headers)
    assert status == 200 and "already received" in answer["message"]
    assert len(deliveries(bot)) == 1


async def test_forgejo_headers_alone_are_enough(bot):
    headers, body = example("pull-request-comment-created.forgejo.json")
    forgejo = {k: v for k, v in headers.items() if k.startswith("X-Forgejo") or k == "Content-Type"}
    forgejo["X-Forgejo-Signature"] = sign(body, bot.secret)
    status, _ = await post(bot, body, forgejo)
    assert status == 202
    assert deliveries(bot) == [(headers["X-Forgejo-Delivery"], "pull_request_comment")]


async def test_healthz_reports_each_dependency(bot):
    async with aiohttp.ClientSession() as session:
        async with session.get(bot.url + "/healthz") as resp:
            assert resp.status == 200
            body = await resp.json()
            assert {k: body[k] for k in ("store", "docker", "forge")} == {"store": "up", "docker": "up", "forge": "up"}


async def test_healthz_asks_a_forge_that_is_down_once_and_says_so(bot, world, caplog):
    """An orchestrator probes /healthz every few seconds: while the Forge is down each probe is one
    quick question to it, not retries with backoff (and a log line for each)."""
    forge = world["forge"]
    await forge.outage_start("503")
    try:
        asked = len([r for r in forge.requests if r.path.endswith("/version")])
        async with aiohttp.ClientSession() as session:
            async with session.get(bot.url + "/healthz") as resp:
                assert resp.status == 503
                assert (await resp.json())["forge"] == "down"
        assert len([r for r in forge.requests if r.path.endswith("/version")]) == asked + 1
        assert "retrying GET /version" not in caplog.text
    finally:
        await forge.outage_end()
