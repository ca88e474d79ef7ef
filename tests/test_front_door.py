"""``POST /webhook`` over real HTTP: 401/400/408/413/503/202/200, durable dedup, and the bot's own
events; ``/healthz``."""

import asyncio
import json
import sqlite3
import uuid

import aiohttp
import pytest

from bot.app import ARRIVING
from bot.intake.webhook import sign

from .helpers import example, wait_for


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


def version_calls(forge) -> int:
    return len([r for r in forge.requests if r.path.endswith("/version")])


async def test_concurrent_health_probes_share_one_check(bot, world):
    """/healthz answers anyone: each probe asking the Forge, Docker and the store anew would let a
    crowd of them hammer all three through the bot, and queue the webhook's own store writes behind
    theirs. Probes that come while a check is under way wait for it and share its answer."""
    forge = world["forge"]
    asked = version_calls(forge)
    forge.faults(1.0, kinds=["before_hang"], hang_seconds=1.5, only=r"/version$")  # a check held 1.5 s

    async def probe(session) -> tuple[int, dict]:
        async with session.get(bot.url + "/healthz") as resp:
            return resp.status, await resp.json()

    async with aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(probe(session))
        await wait_for(lambda: forge.injected_faults)  # its check is waiting for the Forge
        answers = await asyncio.gather(first, *(probe(session) for _ in range(49)))
        assert len(forge.injected_faults) == 1 and version_calls(forge) == asked + 1
        assert answers == [answers[0]] * 50 and answers[0][0] == 503 and answers[0][1]["forge"] == "down"
        forge.faults(0.0)

        async def up():  # the answer is reused for about a second, then checked again: once
            return await probe(session) == (200, {**answers[0][1], "forge": "up"})

        await wait_for(up, timeout=10)
    assert version_calls(forge) == asked + 2


# Senders without the secret who stall mid-body ------------------------------------------------


async def stalled(bot, length: int, sent: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection that sends a delivery's headers and ``sent`` of its ``length`` body bytes, then nothing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", bot.port)
    head = (
        "POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"X-Gitea-Event-Type: issue_comment\r\nX-Gitea-Delivery: {uuid.uuid4()}\r\n"
        f"X-Gitea-Signature: {'0' * 64}\r\nContent-Length: {length}\r\n\r\n"
    )
    writer.write(head.encode() + b"{" + b" " * (sent - 1))
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader, within: float = 5.0) -> tuple[int, dict]:
    """The status and JSON body the bot answers on a raw connection, waiting at most ``within`` s."""
    async with asyncio.timeout(within):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        length = int(next(line.split(":")[1] for line in head.split("\r\n") if line.lower().startswith("content-length")))
        return int(head.split()[1]), json.loads(await reader.readexactly(length))


async def test_stalled_bodies_get_408_and_a_delivery_meanwhile_is_accepted(make_bot):
    bot = await make_bot(frozen=True, max_body_bytes=64 * 1024, body_timeout=0.5)
    conns = [await stalled(bot, 60 * 1024, 30 * 1024) for _ in range(5)]
    try:
        _, body = example("issue-comment-created.json")
        headers = signed(body, bot.secret)
        assert (await post(bot, body, headers))[0] == 202
        for reader, _ in conns:
            assert await answer(reader) == (408, {"status": "error", "message": "body not received within 0.5 s"})
        assert deliveries(bot) == [(headers["X-Gitea-Delivery"], "issue_comment")]
    finally:
        for _, writer in conns:
            writer.close()


async def test_bodies_past_the_cap_get_503_at_once_and_their_slots_come_back(make_bot):
    bot = await make_bot(frozen=True, max_body_bytes=64 * 1024, max_arriving_bodies=2, body_timeout=60.0)
    conns = [await stalled(bot, 60 * 1024, 1024) for _ in range(2)]
    try:
        await wait_for(lambda: bot.app[ARRIVING].count == 2)
        reader, writer = await stalled(bot, 60 * 1024, 1024)
        conns.append((reader, writer))
        status, answered = await answer(reader)  # at once: long before the 60 s the others may take
        assert (status, answered["message"]) == (503, "2 deliveries arriving at once already; send it again")
    finally:
        for _, writer in conns:
            writer.close()
    await wait_for(lambda: bot.app[ARRIVING].count == 0)  # senders that hang up give their slots back
    _, body = example("issue-comment-created.json")
    assert (await post(bot, body, signed(body, bot.secret)))[0] == 202
