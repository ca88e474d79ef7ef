"""Tests of the fake Forge itself, over real HTTP: if these pass, the integration tests that lean on it
can trust what it says about Gitea 1.26 and Forgejo 15."""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import hmac
import json
import os
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.fakeforge import FakeForge, Repo, User, api, hooks, spec
from tests.fakeforge.gojson import encode, marshal_indent
from tests.fakeforge.render import Renderer, Site
from tests.fakeforge.state import Access, State
from tests.helpers import git_async, serve, wait_for

PAYLOADS = Path(__file__).parent / "fakeforge" / "data" / "payloads"
SECRET = "s3cret"

# --- fixtures ------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """The bot's webhook endpoint, reduced to recording what arrives."""

    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0


@pytest.fixture
async def receiver():
    rec = Receiver()

    async def handle(request: web.Request) -> web.Response:
        rec.received.append((dict(request.headers), await request.read()))
        await asyncio.sleep(rec.delay)
        return web.Response(status=rec.status)

    app = web.Application()
    app.router.add_post("/webhook", handle)
    runner, url = await serve(app)
    rec.url = f"{url}/webhook"
    yield rec
    await runner.cleanup()


@dataclass
class Answer:
    status: int
    raw: bytes
    headers: Any

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class World:
    forge: FakeForge
    repo: Repo
    bot: User
    alice: User
    bob: User
    rita: User
    receiver: Receiver
    session: aiohttp.ClientSession

    async def call(self, user: User | None, method: str, path: str, *, body: Any = None,
                   headers: dict[str, str] | None = None, data: bytes | None = None) -> Answer:
        """One API call as ``user`` (None: anonymous); ``path`` is below /api/v1."""
        sent = dict(headers or {})
        if user is not None:
            sent.setdefault("Authorization", f"token {user.token}")
        kwargs: dict[str, Any] = {"json": body} if body is not None else {"data": data}
        async with self.session.request(method, f"{self.forge.url}/api/v1{path}", headers=sent, **kwargs) as resp:
            return Answer(resp.status, await resp.read(), resp.headers)

    def hook_bodies(self, event_type: str) -> list[dict[str, Any]]:
        return [d.payload for d in self.forge.deliveries if d.event_type == event_type]


async def make_world(forge: FakeForge, receiver: Receiver) -> World:
    bot = forge.add_user("dispatchbot")
    alice, bob, rita = forge.add_user("alice"), forge.add_user("bob"), forge.add_user("rita")
    repo = forge.add_repo("acme", "widgets", files={"README.md": "hi\n", "src/app.py": "print('hi')\n"})
    forge.set_permission(repo, "dispatchbot", "admin")
    forge.set_permission(repo, "bob", "write")
    forge.set_permission(repo, "rita", "read")
    forge.add_hook(repo, receiver.url, SECRET)
    session = aiohttp.ClientSession()
    return World(forge, repo, bot, alice, bob, rita, receiver, session)


@pytest.fixture
async def world(fake_forge, receiver):
    w = await make_world(fake_forge, receiver)
    yield w
    await w.session.close()


@pytest.fixture
async def fj_world(tmp_path, receiver):
    forge = FakeForge(tmp_path / "forgejo", forgejo=True)
    await forge.start()
    w = await make_world(forge, receiver)
    yield w
    await w.session.close()
    await forge.close()
    assert forge.violations == [] and forge.internal_errors == []


# --- payloads: byte for byte against the shared examples ----------------------------------------


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def example_scenario(forgejo: bool) -> tuple[State, Renderer, dict[str, Any]]:
    """The scenario of payloads/README.md: acme/widgets (12), alice (5) with fork alice/widgets (31),
    bob (7, writer), issue #14 and PR #15; ids, timestamps and counters as in the examples."""
    st = State(Path("/nonexistent"))
    acme = st.add_user("acme", id=3, is_org=True, full_name="ACME Corp", created=_t("2024-01-10T08:00:00Z"),
                       avatar_hash="6f1d6b8c1f2e4a0b9d3c7e5a2b4c6d8e")
    alice = st.add_user("alice", id=5, full_name="Alice Liddell", language="en-US",
                        last_login=_t("2025-06-02T08:55:41Z"), created=_t("2024-02-01T09:30:00Z"))
    bob = st.add_user("bob", id=7, full_name="Bob Builder", created=_t("2024-02-03T10:00:00Z"))
    base_sha, head_sha = "9f1c2e4b7a3d5c6e8f0a1b2c3d4e5f60718293a4", "3b7e9c1d2f4a6b8c0d1e2f3a4b5c6d7e8f901234"
    repo = st.add_repo(acme, "widgets", id=12, description="Widget toolkit", size=1436, language="Python",
                       stars_count=4, forks_count=1, watchers_count=3, release_counter=3,
                       created_at=_t("2024-01-10T08:05:00Z"), updated_at=_t("2025-06-02T09:01:12Z"),
                       topics=["widgets", "toolkit"], licenses=["MIT"])
    repo.branches = {"main": base_sha, **{f"other-{i}": base_sha for i in range(4)}}  # branch_count 5
    repo.collaborators[bob.id] = Access.WRITE
    fork = st.add_repo(alice, "widgets", id=31, parent=repo, description="Widget toolkit", size=1440,
                       language="Python", watchers_count=1, created_at=_t("2025-05-28T16:20:00Z"),
                       updated_at=_t("2025-06-02T08:59:30Z"), licenses=["MIT"])
    fork.branches = {"main": base_sha, "fix/settings-crash": head_sha}
    bug = st.add_label(repo, "kind/bug", "ee0701", id=22, description="Something is not working")
    wip = st.add_label(repo, "status/in-progress", "fbca04", id=23, description="Someone is working on this")
    issue = st.add_issue(repo, alice, "Crash when saving settings",
                         "Saving settings with no config file raises FileNotFoundError.", id=114, number=14)
    issue.labels, issue.created_at = [bug, wip], _t("2025-06-01T14:03:27Z")
    pr_issue = st.add_issue(repo, alice, "Fix crash when saving settings",
                            "Guard against a missing config file.\n\nFixes #14", id=115, number=15)
    pr_issue.created_at = _t("2025-06-02T09:00:00Z")
    pull = st.add_pull(pr_issue, fork, "fix/settings-crash", "main", head_sha, base_sha, id=41)
    pull.additions, pull.deletions, pull.changed_files = 12, 3, 2
    repo.open_issues_count, repo.open_pr_counter = 7, 2
    renderer = Renderer(Site("https://forge.example.com/", forgejo), st)
    return st, renderer, {"issue": issue, "pr_issue": pr_issue, "pull": pull, "alice": alice, "bob": bob}


def _at(obj: Any, when: str, comments: int | None = None) -> None:
    obj.updated_at = _t(when)
    if comments is not None:
        obj.num_comments = comments


def _build_example(name: str) -> bytes:
    forgejo = name.endswith(".forgejo")
    st, r, x = example_scenario(forgejo)
    issue, pr_issue, pull, alice, bob = x["issue"], x["pr_issue"], x["pull"], x["alice"], x["bob"]
    if name == "issues-labeled":
        _at(issue, "2025-06-02T08:41:05Z", 2)
        _, payload = hooks.issue_event(r, "label_updated", issue, bob, label=True)
    elif name == "issue-comment-created":
        comment = st.add_comment(issue, alice, "/time start", id=512)
        comment.created_at = comment.updated_at = _t("2025-06-02T08:47:19Z")
        _at(issue, "2025-06-02T08:47:19Z", 3)
        _, payload = hooks.comment_event(r, "created", comment, alice)
    elif name.startswith("pull-request-comment-created"):
        comment = st.add_comment(pr_issue, bob, "/review", id=515)
        comment.created_at = comment.updated_at = _t("2025-06-02T09:20:44Z")
        _at(pr_issue, "2025-06-02T09:20:44Z", 1)
        _, payload = hooks.comment_event(r, "created", comment, bob)
    elif name == "pull-request-opened":
        _at(pr_issue, "2025-06-02T09:00:00Z", 0)
        payload = hooks.pull_payload(r, "opened", pull, alice, repo_mode=st.access(alice, pr_issue.repo))
    else:  # pull-request-synchronized: alice pushed a41c5e7
        _at(pr_issue, "2025-06-02T10:02:13Z", 1)
        pull.head_sha = pull.head_repo.branches["fix/settings-crash"] = "a41c5e7f9b2d4f6a8c0e1b3d5f7a9c2e4b6d8f02"
        pull.additions, pull.deletions, pull.changed_files = 19, 4, 3
        payload = hooks.pull_payload(r, "synchronized", pull, alice, repo_mode=Access.OWNER)
    return marshal_indent(payload)


EXAMPLES = ["issue-comment-created", "issues-labeled", "pull-request-comment-created", "pull-request-opened",
            "pull-request-synchronized", "pull-request-comment-created.forgejo"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_payload_bytes_match_the_examples(name):
    assert _build_example(name) == (PAYLOADS / f"{name}.json").read_bytes()


@pytest.mark.parametrize("name", EXAMPLES)
def test_headers_and_signatures_match_the_examples(name):
    example = json.loads((PAYLOADS / f"headers-{name}.json").read_text())
    want = example["headers"]
    got = hooks.delivery_headers(want["X-Gitea-Event-Type"], _build_example(name), secret=example["secret"],
                                 delivery_id=want["X-Gitea-Delivery"], forgejo=name.endswith(".forgejo"))
    assert list(got.items()) == list(want.items())  # same set, same values, same order


def test_go_json_escaping():
    assert marshal_indent({"a": "<b> & \u2028\u2029 é \x01 \x7f", "n": [], "o": {}}) == (
        b'{\n  "a": "\\u003cb\\u003e \\u0026 \\u2028\\u2029 \xc3\xa9 \\u0001 \x7f",\n  "n": [],\n  "o": {}\n}')
    assert encode({"x": [1, None]}) == b'{"x":[1,null]}\n'


def test_vendored_specs_are_the_published_ones():
    for forgejo, digest in ((False, "f10ecf3934a5b603e55a531dcf81f1d8e84fff702d116ea4791d30f70c5f0d83"),
                            (True, "a90f2fe1266a7a08dfcf682cd28db96c364e18a7de2a4e559a26afe3485bb26f")):
        data = gzip.decompress((spec.DATA_DIR / spec.SPEC_FILES[forgejo]).read_bytes())
        assert hashlib.sha256(data).hexdigest() == digest


def test_every_route_is_a_spec_operation():
    gitea, forgejo = spec.load(False), spec.load(True)
    for method, template in api.ROUTES:
        assert gitea.has(method, template) or forgejo.has(method, template), (method, template)


# --- live webhooks -------------------------------------------------------------------------------


async def test_delivery_is_signed_and_answered_before_the_helper_returns(world):
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash", "a <b> & c")
    await world.forge.create_comment(world.repo, issue.number, world.bob, "/dispatch codex fix it")
    assert len(world.receiver.received) == 2  # both answered already
    headers, body = world.receiver.received[1]
    assert headers["X-Gitea-Event"] == headers["X-Gitea-Event-Type"] == "issue_comment"
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Gitea-Signature"] == headers["X-Gogs-Signature"] == digest
    assert headers["X-Hub-Signature-256"] == f"sha256={digest}"
    assert headers["X-Hub-Signature"] == "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    assert uuid.UUID(headers["X-Gitea-Delivery"]).version == 4
    example = json.loads((PAYLOADS / "headers-issue-comment-created.json").read_text())["headers"]
    assert set(example) <= set(headers)
    payload = json.loads(body)
    assert payload["action"] == "created" and payload["is_pull"] is False
    assert payload["comment"]["body"] == "/dispatch codex fix it" and payload["sender"]["login"] == "bob"
    assert "pull_request" not in payload and payload["issue"]["pull_request"] is None
    opened = world.receiver.received[0][1]
    assert json.loads(opened)["issue"]["body"] == "a <b> & c" and b'"a \\u003cb\\u003e \\u0026 c"' in opened
    assert [d.status for d in world.forge.deliveries] == [200, 200]


async def test_pull_request_comment_and_label_events(world):
    pull = await world.forge.create_pull(world.repo, world.alice, head="feature", title="Feature",
                                         files={"a.py": "x = 1\n"})
    await world.forge.create_comment(world.repo, pull.number, world.bob, "/review")
    await world.forge.set_labels(world.repo, pull.number, world.bob, ["dispatch:codex"])
    opened, comment, label = (d.payload for d in world.forge.deliveries)
    assert [d.event_type for d in world.forge.deliveries] == ["pull_request", "pull_request_comment",
                                                              "pull_request_label"]
    assert opened["action"] == "opened" and opened["pull_request"]["head"]["sha"] == pull.head_sha
    assert comment["is_pull"] is True and comment["pull_request"]["number"] == pull.number
    assert comment["comment"]["issue_url"] == "" and comment["comment"]["pull_request_url"].endswith(
        f"/pulls/{pull.number}")
    assert comment["issue"]["pull_request"]["html_url"].endswith(f"/pulls/{pull.number}")
    assert label["action"] == "label_updated" and label["repository"]["permissions"]["admin"] is True
    assert [lb["name"] for lb in label["pull_request"]["labels"]] == ["dispatch:codex"]


async def test_the_bots_own_api_writes_fire_webhooks_with_the_bot_as_sender(world):
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash")
    assert (await world.call(world.bot, "POST", f"/repos/acme/widgets/issues/{issue.number}/comments",
                             body={"body": "on it"})).status == 201
    answer = await world.call(world.bot, "PUT", f"/repos/acme/widgets/issues/{issue.number}/labels",
                              body={"labels": ["status/running"]})
    assert answer.status == 200 and answer.json == []  # unknown name: silently ignored
    await world.forge.settle()
    comment, label = world.hook_bodies("issue_comment")[0], world.hook_bodies("issue_label")[0]
    assert comment["sender"]["login"] == label["sender"]["login"] == "dispatchbot"
    assert comment["repository"]["permissions"] == {"admin": True, "push": True, "pull": True}
    assert label["issue"]["labels"] == []


async def test_redeliver_sends_the_same_body_under_a_new_id(world):
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash")
    first = world.forge.deliveries[0]
    again = await world.forge.redeliver(first.id)
    assert again.id != first.id and again.redelivery_of == first.id
    assert again.body == first.body and again.status == 200
    (h1, b1), (h2, b2) = world.receiver.received
    assert b1 == b2 and h1["X-Gitea-Signature"] == h2["X-Gitea-Signature"]
    assert h2["X-Gitea-Delivery"] == h2["X-GitHub-Delivery"] == again.id != h1["X-Gitea-Delivery"]
    assert issue.number == again.payload["number"]


async def test_tampered_and_failed_deliveries_are_recorded(world):
    hook = world.forge.state.hooks[0]
    body = marshal_indent({"action": "created"})
    wrong = await world.forge.deliver(hook, "issue_comment", body, secret="wrong")
    headers, got = world.receiver.received[-1]
    assert got == body and headers["X-Gitea-Signature"] == hmac.new(b"wrong", body, hashlib.sha256).hexdigest()
    assert wrong.status == 200
    built = world.forge.build_delivery("issue_comment", body, secret=SECRET, delivery_id="d-1")
    assert built["X-Gitea-Signature"] == hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    world.receiver.status = 500
    failed = await world.forge.deliver(hook, "issue_comment", {"action": "created"})
    assert failed.status == 500 and not failed.ok
    dead = world.forge.add_hook(world.repo, "http://127.0.0.1:9/webhook", SECRET)
    refused = await world.forge.deliver(dead, "issues", {"action": "opened"})
    assert refused.status is None and refused.error


async def test_deliveries_to_one_hook_are_sequential_and_time_out_after_5s(world, monkeypatch):
    monkeypatch.setattr(hooks, "DELIVERY_TIMEOUT", 0.3)
    world.receiver.delay = 0.5
    issue = await world.forge.create_issue(world.repo, world.alice, "Slow")
    assert world.forge.deliveries[0].error == "timeout"
    world.receiver.delay = 0.05
    for text in ("one", "two", "three"):
        world.forge.svc.create_comment(issue, world.bob, text)  # queued without waiting, like API writes
    await world.forge.settle()
    bodies = [json.loads(b)["comment"]["body"] for _, b in world.receiver.received[1:]]
    assert bodies == ["one", "two", "three"]


# --- authentication ------------------------------------------------------------------------------


async def test_auth_schemes_and_failures(world):
    token = world.bot.token
    for header in (f"token {token}", f"Bearer {token}", f"BEARER {token}",
                   "Basic " + base64.b64encode(f"{token}:".encode()).decode(),
                   "Basic " + base64.b64encode(f"{token}:x-oauth-basic".encode()).decode(),
                   "Basic " + base64.b64encode(f"dispatchbot:{token}".encode()).decode()):
        answer = await world.call(None, "GET", "/user", headers={"Authorization": header})
        assert (answer.status, answer.json["login"]) == (200, "dispatchbot"), header
    bad = await world.call(None, "GET", "/repos/acme/widgets", headers={"Authorization": "token nope"})
    assert bad.status == 401 and bad.json == {"message": "invalid username, password or token",
                                              "url": f"{world.forge.url}/api/swagger"}
    assert (await world.call(None, "GET", "/repos/acme/widgets")).status == 200  # public read
    write = await world.call(None, "POST", "/repos/acme/widgets/issues/1/comments", body={"body": "x"})
    assert write.status == 401 and write.json["message"] == "token is required"


async def test_token_scopes(world):
    reader = world.forge.add_user("reader", scopes=["read:issue", "read:repository"])
    world.forge.set_permission(world.repo, "reader", "write")
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash")
    assert (await world.call(reader, "GET", f"/repos/acme/widgets/issues/{issue.number}")).status == 200
    denied = await world.call(reader, "POST", f"/repos/acme/widgets/issues/{issue.number}/comments",
                              body={"body": "x"})
    assert denied.status == 403 and "required=[write:issue]" in denied.json["message"]


# --- spec checking -------------------------------------------------------------------------------


async def test_spec_violations_are_recorded_and_answered_like_gitea(world):
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash")
    path = f"/repos/acme/widgets/issues/{issue.number}/comments"
    wrong_type = await world.call(world.bot, "POST", path, body={"body": 42})
    assert wrong_type.status == 422 and "cannot unmarshal number" in wrong_type.json["message"]
    missing = await world.call(world.bot, "POST", path, body={})
    assert missing.status == 422 and missing.json["message"] == "[Body]: Required"
    no_type = await world.call(world.bot, "POST", path, data=b'{"body": "x"}',
                               headers={"Content-Type": ""})
    assert no_type.status == 422
    extra = await world.call(world.bot, "POST", path, body={"body": "ok", "bodyy": "typo"})
    assert extra.status == 201  # Go ignores unknown fields ...
    status = await world.call(world.bot, "POST", f"/repos/acme/widgets/statuses/{world.repo.branches['main']}",
                              body={"state": "exploded", "context": "ci"})
    assert status.status == 201  # ... and does not check enums
    nowhere = await world.call(world.bot, "GET", "/repos/acme/widgets/frobnicate")
    assert nowhere.status == 404 and nowhere.json["errors"] == []
    query = await world.call(world.bot, "GET", "/repos/acme/widgets/pulls?state=opened&colour=blue&limit=x")
    assert query.status == 200 and query.headers["X-Total-Count"] == "0"
    kinds = {v.kind for v in world.forge.violations}
    assert kinds == {"body", "route", "query"}
    details = " | ".join(v.detail for v in world.forge.violations)
    for expected in ("42 is not of type 'string'", "body: required", "Content-Type", "bodyy: unknown field",
                     "'exploded' is not one of", "unknown query parameter 'colour'", "limit='x' is not an integer",
                     "state='opened' is not one of"):
        assert expected in details
    assert world.forge.comments(world.repo, issue.number)[0].body == "ok"
    world.forge.violations.clear()


async def test_request_log(world):
    await world.call(world.rita, "GET", "/repos/acme/widgets")
    record = world.forge.calls("GET", "/repos/{owner}/{repo}")[-1]
    assert (record.user, record.status, record.path) == ("rita", 200, "/api/v1/repos/acme/widgets")


# --- comments, labels ----------------------------------------------------------------------------


async def test_comment_rules(world):
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash")
    missing = await world.call(world.bot, "POST", "/repos/acme/widgets/issues/999/comments", body={"body": "x"})
    assert missing.status == 500 and missing.json["message"] == ""  # Gitea: 500, not 404
    posted = await world.call(world.rita, "POST", f"/repos/acme/widgets/issues/{issue.number}/comments",
                              body={"body": "readers may comment"})
    assert posted.status == 201
    cid = posted.json["id"]
    listed = await world.call(None, "GET", f"/repos/acme/widgets/issues/{issue.number}/comments")
    assert [c["body"] for c in listed.json] == ["readers may comment"]
    forbidden = await world.call(world.alice, "PATCH", f"/repos/acme/widgets/issues/comments/{cid}",
                                 body={"body": "hijack"})
    assert forbidden.status == 403 and forbidden.raw == b""
    edited = await world.call(world.bot, "PATCH", f"/repos/acme/widgets/issues/comments/{cid}",
                              body={"body": "edited"})
    assert edited.status == 200 and edited.json["body"] == "edited"
    await world.forge.settle()
    assert world.hook_bodies("issue_comment")[-1]["changes"] == {"body": {"from": "readers may comment"}}
    assert (await world.call(world.bot, "DELETE", f"/repos/acme/widgets/issues/comments/{cid}")).status == 204
    assert (await world.call(world.bot, "GET", f"/repos/acme/widgets/issues/comments/{cid}")).status == 404


async def test_label_rules(world):
    bug = world.forge.add_label(world.repo, "kind/bug")
    codex = world.forge.add_label(world.repo, "dispatch:codex")
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash", labels=["kind/bug"])
    path = f"/repos/acme/widgets/issues/{issue.number}/labels"
    by_name = await world.call(world.bot, "POST", path, body={"labels": ["dispatch:codex", "no-such"]})
    assert by_name.status == 200 and [lb["name"] for lb in by_name.json] == ["dispatch:codex", "kind/bug"]
    by_id = await world.call(world.bot, "PUT", path, body={"labels": [bug.id, 9999]})
    assert [lb["id"] for lb in by_id.json] == [bug.id]
    assert (await world.call(world.bot, "POST", path, body={"labels": [codex.id, "kind/bug"]})).status == 400
    denied = await world.call(world.rita, "POST", path, body={"labels": ["dispatch:codex"]})
    assert denied.status == 403 and denied.raw == b""
    assert (await world.call(world.bot, "DELETE", f"{path}/9999")).status == 422
    assert (await world.call(world.bot, "DELETE", f"{path}/kind%2Fbug")).status == 422  # ids only in Gitea
    assert (await world.call(world.bot, "DELETE", f"{path}/{bug.id}")).status == 204
    assert (await world.call(world.bot, "DELETE", path)).status == 204
    await world.forge.settle()
    actions = [p["action"] for p in world.hook_bodies("issue_label")]
    assert actions == ["label_updated"] * 3 + ["label_cleared"]
    assert [lb["name"] for lb in world.hook_bodies("issue_label")[0]["issue"]["labels"]] == [
        "dispatch:codex", "kind/bug"]
    created = await world.call(world.bot, "POST", "/repos/acme/widgets/labels",
                               body={"name": "dispatch:claude", "color": "#00aabb"})
    assert created.status == 201 and created.json["color"] == "00aabb"


# --- time tracking -------------------------------------------------------------------------------


async def test_stopwatch_quirks(world):
    one = await world.forge.create_issue(world.repo, world.alice, "One")
    two = await world.forge.create_issue(world.repo, world.alice, "Two")
    sw = "/repos/acme/widgets/issues/{}/stopwatch/{}"
    started = await world.call(world.bot, "POST", sw.format(one.number, "start"))
    assert started.status == 201 and started.raw == b""
    assert (await world.call(world.bot, "POST", sw.format(one.number, "start"))).status == 409
    world.forge.advance_clock(90)
    assert (await world.call(world.bot, "POST", sw.format(two.number, "start"))).status == 201
    booked = world.forge.tracked_times(world.repo, one.number)
    assert [(t.time, t.user.login) for t in booked] == [(90, "dispatchbot")]  # silently stopped and booked
    running = await world.call(world.bot, "GET", "/user/stopwatches")
    assert [(s["issue_index"], s["seconds"]) for s in running.json] == [(two.number, 0)]
    world.forge.advance_clock(3725)
    watches = (await world.call(world.bot, "GET", "/user/stopwatches")).json
    assert watches[0]["duration"] == "1 hour 2 minutes"
    stopped = await world.call(world.bot, "POST", sw.format(two.number, "stop"))
    assert stopped.status == 201 and stopped.raw == b""
    assert (await world.call(world.bot, "POST", sw.format(two.number, "stop"))).status == 409
    assert (await world.call(world.bot, "DELETE", sw.format(two.number, "delete"))).status == 409
    times = await world.call(world.bot, "GET", f"/repos/acme/widgets/issues/{two.number}/times")
    assert [t["time"] for t in times.json] == [3725] and set(times.json[0]) == {
        "id", "created", "time", "user_id", "user_name", "issue_id", "issue"}
    reader = await world.call(world.rita, "POST", sw.format(one.number, "start"))
    assert reader.status == 403 and reader.raw == b""
    world.forge.set_time_tracking(world.repo, False)
    disabled = await world.call(world.bot, "POST", sw.format(one.number, "start"))
    assert disabled.status == 403 and disabled.raw == b""
    assert (await world.call(world.bot, "POST", sw.format(999, "start"))).status == 404
    assert world.forge.deliveries[-1].event_type == "issues"  # timeline only: no webhooks


async def test_tracked_time_api(world):
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash")
    added = await world.call(world.bot, "POST", f"/repos/acme/widgets/issues/{issue.number}/times",
                             body={"time": 120})
    assert added.status == 200 and added.json["time"] == 120 and added.json["user_name"] == "dispatchbot"
    # A reader only sees their own times.
    assert (await world.call(world.rita, "GET", f"/repos/acme/widgets/issues/{issue.number}/times")).json == []


# --- commit statuses -----------------------------------------------------------------------------


async def test_commit_status_rules(world):
    sha = world.repo.branches["main"]
    path = "/repos/acme/widgets/statuses/{}"
    short = await world.call(world.bot, "POST", path.format(sha[:7]),
                             body={"state": "pending", "context": "dispatch/codex", "description": "queued",
                                   "target_url": "http://x/1"})
    assert short.status == 201 and short.json["status"] == "pending" and short.json["url"].endswith(sha)
    assert "state" not in short.json
    await world.call(world.bot, "POST", path.format(sha), body={"state": "success", "context": "dispatch/codex"})
    await world.call(world.bot, "POST", path.format(sha), body={"state": "pending", "context": "other"})
    unknown = await world.call(world.bot, "POST", path.format("deadbeef" * 5), body={"state": "success"})
    assert unknown.status == 500
    assert (await world.call(world.rita, "POST", path.format(sha), body={"state": "success"})).status == 403
    combined = (await world.call(None, "GET", "/repos/acme/widgets/commits/main/status")).json
    assert combined["state"] == "pending" and combined["sha"] == sha and combined["total_count"] == 2
    assert {s["context"]: s["status"] for s in combined["statuses"]} == {"dispatch/codex": "success",
                                                                          "other": "pending"}
    listed = await world.call(None, "GET", path.format(sha))
    assert [s["id"] for s in listed.json] == [3, 2, 1] and listed.headers["X-Total-Count"] == "3"
    assert (await world.call(None, "GET", path.format(sha[:7]))).json == []  # GET does not expand
    assert [s.state for s in world.forge.statuses(world.repo, "main")] == ["pending", "success", "pending"]


# --- pull requests and reviews -------------------------------------------------------------------


async def test_pull_request_creation_rules(world):
    await world.forge.push_commit(world.repo, "feature", {"a.py": "x\n"}, author=world.bob)
    body = {"head": "feature", "base": "main", "title": "Feature"}
    created = await world.call(world.bot, "POST", "/repos/acme/widgets/pulls", body=body)
    assert created.status == 201 and created.json["head"]["ref"] == "feature"
    assert created.json["additions"] == 1 and created.json["changed_files"] == 1
    duplicate = await world.call(world.bot, "POST", "/repos/acme/widgets/pulls", body=body)
    assert duplicate.status == 409
    same = await world.call(world.bot, "POST", "/repos/acme/widgets/pulls", body={**body, "head": "main"})
    assert same.status == 422
    missing = await world.call(world.bot, "POST", "/repos/acme/widgets/pulls", body={**body, "head": "nope"})
    assert missing.status == 404
    await world.forge.settle()
    assert world.hook_bodies("pull_request")[0]["sender"]["login"] == "dispatchbot"


async def test_pull_list_pagination(world):
    for i in range(3):
        await world.forge.create_pull(world.repo, world.alice, head=f"b{i}", title=f"PR {i}", files={f"{i}": "x"})
    first = await world.call(None, "GET", "/repos/acme/widgets/pulls?state=open&limit=2")
    base = f"{world.forge.url}/api/v1/repos/acme/widgets/pulls"
    assert [p["title"] for p in first.json] == ["PR 2", "PR 1"] and first.headers["X-Total-Count"] == "3"
    assert first.headers["Link"] == (f'<{base}?limit=2&page=2&state=open>; rel="next",'
                                     f'<{base}?limit=2&page=2&state=open>; rel="last"')
    second = await world.call(None, "GET", "/repos/acme/widgets/pulls?state=open&limit=2&page=2")
    assert [p["title"] for p in second.json] == ["PR 0"]
    assert second.headers["Link"] == (f'<{base}?limit=2&page=1&state=open>; rel="first",'
                                      f'<{base}?limit=2&page=1&state=open>; rel="prev"')
    capped = await world.call(None, "GET", "/repos/acme/widgets/pulls?limit=500")
    assert len(capped.json) == 3 and "additions" not in capped.json[0]


async def test_review_rules(world):
    pull = await world.forge.create_pull(world.repo, world.alice, head="feature", title="Feature",
                                         files={"src/app.py": "print('hi')\nprint('there')\n"})
    path = f"/repos/acme/widgets/pulls/{pull.number}/reviews"
    pending = await world.call(world.bot, "POST", path, body={"body": "thinking"})
    assert pending.status == 200 and pending.json["state"] == "PENDING"
    bogus = await world.call(world.bot, "POST", path, body={"event": "BOGUS", "body": "hmm"})
    assert bogus.status == 200 and bogus.json["state"] == "PENDING"  # not an error: a pending review
    assert "'BOGUS' is not one of" in world.forge.violations.pop().detail  # ... but not what the spec allows
    assert (await world.call(world.bot, "POST", path, body={})).status == 422  # a pending review needs a body
    empty = await world.call(world.bot, "POST", path, body={"event": "COMMENT"})
    assert empty.status == 422
    own = await world.call(world.alice, "POST", path, body={"event": "APPROVED"})
    assert own.status == 422
    assert (await world.call(world.bob, "POST", path, body={"event": "REQUEST_CHANGES"})).status == 422
    commented = await world.call(world.bob, "POST", path, body={
        "event": "COMMENT", "comments": [{"path": "src/app.py", "body": "why?", "new_position": 2}]})
    assert commented.status == 200 and commented.json["state"] == "COMMENT"
    code = await world.call(None, "GET", f"{path}/{commented.json['id']}/comments")
    assert [(c["path"], c["position"], c["original_position"]) for c in code.json] == [("src/app.py", 2, 0)]
    assert [r["state"] for r in (await world.call(world.bob, "GET", path)).json] == ["COMMENT"]  # not pending
    approved = await world.call(world.bot, "POST", path, body={"event": "APPROVED", "body": "lgtm"})
    assert approved.json["state"] == "APPROVED" and approved.json["commit_id"] == pull.head_sha
    assert approved.json["id"] == pending.json["id"]  # submitting turns the pending review into this one
    listed = await world.call(world.bob, "GET", path)
    assert [r["state"] for r in listed.json] == ["APPROVED", "COMMENT"]
    await world.forge.settle()
    assert [d.event_type for d in world.forge.deliveries[1:]] == ["pull_request_review_comment",
                                                                  "pull_request_review_approved"]
    assert world.forge.deliveries[-1].event == "pull_request_approved"
    assert world.forge.deliveries[-1].payload["review"] == {"type": "pull_request_review_approved",
                                                            "content": "lgtm"}
    await world.forge.close_issue(world.repo, pull.number, world.alice)
    closed = await world.call(world.bob, "POST", path, body={"event": "COMMENT", "body": "late"})
    assert closed.status == 422


async def test_reactions(world):
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash")
    comment = await world.forge.create_comment(world.repo, issue.number, world.bob, "/dispatch codex")
    path = f"/repos/acme/widgets/issues/comments/{comment.id}/reactions"
    first = await world.call(world.bot, "POST", path, body={"content": "eyes"})
    assert first.status == 201 and set(first.json) == {"user", "content", "created_at"}
    assert (await world.call(world.bot, "POST", path, body={"content": "eyes"})).status == 200
    bad = await world.call(world.bot, "POST", path, body={"content": "thumbsup"})
    assert bad.status == 403 and bad.json["message"] == "'thumbsup' is not an allowed reaction"
    assert [r.content for r in world.forge.reactions(comment.id)] == ["eyes"]
    assert (await world.call(world.bot, "DELETE", path, body={"content": "eyes"})).status == 204
    assert world.forge.reactions(comment.id) == []
    on_issue = await world.call(world.bot, "POST", f"/repos/acme/widgets/issues/{issue.number}/reactions",
                                body={"content": "rocket"})
    assert on_issue.status == 201 and [r.content for r in world.forge.issue_reactions(world.repo, 1)] == ["rocket"]


async def test_permission_endpoint(world):
    path = "/repos/acme/widgets/collaborators/{}/permission"
    as_admin = await world.call(world.bot, "GET", path.format("bob"))
    assert as_admin.status == 200 and (as_admin.json["permission"], as_admin.json["role_name"]) == ("write", "write")
    assert (await world.call(world.bot, "GET", path.format("alice"))).json["permission"] == "read"
    assert (await world.call(world.rita, "GET", path.format("bob"))).status == 403
    assert (await world.call(world.rita, "GET", path.format("rita"))).json["permission"] == "read"
    assert (await world.call(world.bot, "GET", path.format("ghost"))).status == 404
    root = world.forge.add_user("root", admin=True)
    assert (await world.call(root, "GET", path.format("root"))).json["permission"] == "owner"


async def test_issue_list_and_pull_lookup_by_branches(world):
    await world.forge.create_issue(world.repo, world.alice, "Crash", labels=["kind/bug"])
    pull = await world.forge.create_pull(world.repo, world.alice, head="feature", title="Fix", files={"a": "b"})
    both = await world.call(None, "GET", "/repos/acme/widgets/issues")
    assert [i["title"] for i in both.json] == ["Fix", "Crash"] and both.json[0]["pull_request"] is not None
    assert [i["title"] for i in (await world.call(None, "GET", "/repos/acme/widgets/issues?type=issues")).json] == [
        "Crash"]
    labelled = await world.call(None, "GET", "/repos/acme/widgets/issues?labels=kind/bug,other")
    assert [i["number"] for i in labelled.json] == [1]
    found = await world.call(None, "GET", "/repos/acme/widgets/pulls/main/feature")
    assert found.status == 200 and found.json["number"] == pull.number
    assert (await world.call(None, "GET", "/repos/acme/widgets/pulls/main/nope")).status == 404


async def test_pull_from_a_fork_then_merge(world):
    fork = world.forge.fork_repo(world.repo, world.alice)
    await world.forge.push_commit(fork, "fix", {"fix.py": "ok = True\n"}, author=world.alice)
    pull = await world.forge.create_pull(world.repo, world.alice, head="alice:fix", title="Fix it")
    head = world.forge.deliveries[-1].payload["pull_request"]["head"]
    assert head["repo"]["full_name"] == "alice/widgets" and head["repo"]["fork"] is True
    assert head["repo"]["parent"]["full_name"] == "acme/widgets" and head["sha"] == fork.branches["fix"]
    assert world.forge.file_at(world.repo, f"refs/pull/{pull.number}/head", "fix.py") == b"ok = True\n"
    merge_sha = await world.forge.merge_pull(world.repo, pull.number, world.bob)
    closed = world.forge.deliveries[-1].payload
    assert closed["action"] == "closed" and closed["pull_request"]["merged"] is True
    assert closed["pull_request"]["merge_commit_sha"] == merge_sha == world.forge.branch_sha(world.repo, "main")
    assert world.forge.file_at(world.repo, "main", "fix.py") == b"ok = True\n"
    assert world.forge.pulls(world.repo, "open") == []


async def test_private_repo_is_invisible(world, tmp_path):
    world.forge.add_repo("acme", "secret", files={"k": "v"}, private=True)
    assert (await world.call(None, "GET", "/repos/acme/secret")).status == 404
    assert (await world.call(world.rita, "GET", "/repos/acme/secret")).status == 404
    code, _ = await git_async("clone", "--quiet", f"{world.forge.url}/acme/secret.git", str(tmp_path / "s"), check=False)
    assert code != 0
    world.forge.set_permission(world.forge.repo("acme", "secret"), "rita", "read")
    answer = await world.call(world.rita, "GET", "/repos/acme/secret")
    assert answer.status == 200 and answer.json["private"] is True and answer.json["permissions"]["push"] is False


# --- git over smart HTTP -------------------------------------------------------------------------


async def test_git_clone_and_push_over_http(world, tmp_path):
    work = tmp_path / "clone"
    await git_async("clone", "--quiet", world.forge.clone_url(world.repo), str(work))  # anonymous read
    assert (work / "README.md").read_text() == "hi\n"
    pull = await world.forge.create_pull(world.repo, world.alice, head="feature", title="Feature",
                                         files={"a.py": "x\n"})
    await git_async("fetch", "--quiet", "origin", "feature:feature", f"refs/pull/{pull.number}/head:pr", cwd=work)
    await git_async("checkout", "--quiet", "feature", cwd=work)
    (work / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024))  # > http.postBuffer: a chunked upload
    await git_async("add", ".", cwd=work)
    await git_async("commit", "--quiet", "-m", "big", cwd=work)
    code, out = await git_async("push", "origin", "feature", cwd=work, check=False)
    assert code != 0 and "401" in out or "Username" in out  # anonymous push refused
    code, out = await git_async("-c", f"http.extraHeader=Authorization: token {world.rita.token}", "push", "origin",
                          "feature", cwd=work, check=False)
    assert code != 0 and "User permission denied for writing" in out  # a reader: refused by the hook
    await git_async("push", "--quiet", world.forge.clone_url(world.repo, world.bot), "feature", cwd=work)
    _, head = await git_async("rev-parse", "HEAD", cwd=work)
    assert world.forge.branch_sha(world.repo, "feature") == pull.head_sha == head.strip()
    sync = world.forge.deliveries[-1]
    assert sync.event_type == "pull_request_sync" and sync.payload["sender"]["login"] == "dispatchbot"
    await world.forge.settle()
    assert sync.status == 200 and world.forge.git_log(world.repo, "feature")[0].message == "big\n"
    await git_async("commit", "--quiet", "--allow-empty", "-m", "sneaky", cwd=work)
    code, out = await git_async("-c", f"http.extraHeader=Authorization: token {world.bot.token}", "push", "origin",
                          f"HEAD:refs/pull/{pull.number}/head", cwd=work, check=False)
    assert code != 0 and "refs/pull/" in out


async def test_a_protected_branch_refuses_pushes_outside_its_allowlist(world, tmp_path):
    work = tmp_path / "clone"
    await git_async("clone", "--quiet", world.forge.clone_url(world.repo), str(work))
    world.forge.protect_branch(world.repo, "ma*", push_allowlist=["bob"])
    branch = await world.call(world.bot, "GET", "/repos/acme/widgets/branches/main")
    assert branch.json["protected"] is True and branch.json["effective_branch_protection_name"] == "ma*"
    assert branch.json["user_can_push"] is False
    assert (await world.call(world.bob, "GET", "/repos/acme/widgets/branches/main")).json["user_can_push"] is True
    await git_async("commit", "--quiet", "--allow-empty", "-m", "onto main", cwd=work)
    code, out = await git_async("push", world.forge.clone_url(world.repo, world.bot), "HEAD:main", "HEAD:other",
                                cwd=work, check=False)
    assert code != 0 and "Not allowed to push to protected branch main" in out
    assert world.repo.branches.get("other") is None  # a refused push updates no ref
    await git_async("push", "--quiet", world.forge.clone_url(world.repo, world.bob), "HEAD:main", cwd=work)
    _, head = await git_async("rev-parse", "HEAD", cwd=work)
    assert world.forge.branch_sha(world.repo, "main") == head.strip()
    unprotected = await world.call(world.bot, "GET", "/repos/acme/widgets/branches/feature")
    assert unprotected.status == 404 or unprotected.json["protected"] is False


async def test_an_outage_armed_at_the_next_push_drops_it_and_takes_everything_down(world, tmp_path):
    work = tmp_path / "clone"
    await git_async("clone", "--quiet", world.forge.clone_url(world.repo), str(work))
    await git_async("commit", "--quiet", "--allow-empty", "-m", "x", cwd=work)
    world.forge.outage_at_push(0.5)
    assert (await world.call(None, "GET", "/version")).status == 200  # armed: nothing down yet
    before = world.forge.branch_sha(world.repo, "main")
    code, out = await git_async("push", world.forge.clone_url(world.repo, world.bot), "HEAD:main", cwd=work,
                                check=False)
    assert code != 0 and world.forge.branch_sha(world.repo, "main") == before, out
    with pytest.raises(aiohttp.ClientConnectionError):
        await world.call(None, "GET", "/version")
    await wait_for(lambda: world.forge.server._site is not None, timeout=5)
    await git_async("push", "--quiet", world.forge.clone_url(world.repo, world.bot), "HEAD:main", cwd=work)


async def test_git_upload_pack_accepts_gzip_bodies(world):
    sha = world.repo.branches["main"]
    request = f"0032want {sha}\n".encode() + b"00000009done\n"
    url = f"{world.forge.url}/acme/widgets.git/git-upload-pack"
    for body, encoding in ((request, None), (gzip.compress(request), "gzip")):
        headers = {"Content-Type": "application/x-git-upload-pack-request"}
        if encoding:
            headers["Content-Encoding"] = encoding
        async with world.session.post(url, data=body, headers=headers) as resp:
            answer = await resp.read()
        assert resp.status == 200 and answer.startswith(b"0008NAK\n") and b"PACK" in answer


# --- faults and outages --------------------------------------------------------------------------


async def test_faults_before_and_after_applying(world):
    issue = await world.forge.create_issue(world.repo, world.alice, "Crash")
    path = f"/repos/acme/widgets/issues/{issue.number}/comments"
    world.forge.faults(1.0, seed=1, kinds=["before_500"])
    assert (await world.call(world.bot, "POST", path, body={"body": "one"})).status == 500
    assert world.forge.comments(world.repo, issue.number) == []
    world.forge.faults(1.0, kinds=["after_500"])
    assert (await world.call(world.bot, "POST", path, body={"body": "two"})).status == 500
    assert [c.body for c in world.forge.comments(world.repo, issue.number)] == ["two"]  # it happened anyway
    world.forge.faults(1.0, kinds=["before_502"])
    assert (await world.call(world.bot, "GET", "/version")).status == 502
    world.forge.faults(1.0, kinds=["after_hang"], hang_seconds=5)
    with pytest.raises(asyncio.TimeoutError):
        async with world.session.post(f"{world.forge.url}/api/v1{path}", json={"body": "three"},
                                      headers={"Authorization": f"token {world.bot.token}"},
                                      timeout=aiohttp.ClientTimeout(total=0.3)):
            pass
    assert [c.body for c in world.forge.comments(world.repo, issue.number)] == ["two", "three"]
    world.forge.faults(0)
    assert (await world.call(world.bot, "GET", "/version")).status == 200
    assert [f.kind for f in world.forge.injected_faults] == ["before_500", "after_500", "before_502", "after_hang"]
    await world.forge.settle()


async def test_fault_rate_is_seeded_and_spares_git(world, tmp_path):
    world.forge.faults(0.5, seed=7, kinds=["before_500", "before_502"])
    statuses = [(await world.call(None, "GET", "/version")).status for _ in range(40)]
    assert statuses.count(200) == 40 - len(world.forge.injected_faults)
    assert 5 < len(world.forge.injected_faults) < 35
    world.forge.faults(1.0, kinds=["before_500"])
    await git_async("clone", "--quiet", world.forge.clone_url(world.repo), str(tmp_path / "c"))
    world.forge.faults(0)


async def test_outages(world):
    await world.forge.outage_start("503")
    down = await world.call(None, "GET", "/version")
    assert down.status == 503 and down.headers["Retry-After"]
    await world.forge.outage_start("reset")
    with pytest.raises(aiohttp.ClientError):
        await world.call(None, "GET", "/version")
    await world.forge.outage_start("refuse")
    with pytest.raises(aiohttp.ClientConnectionError):
        await world.call(None, "GET", "/version")
    await world.forge.outage_end()
    assert (await world.call(None, "GET", "/version")).status == 200
    await world.forge.outage(0.2, "refuse")
    with pytest.raises(aiohttp.ClientConnectionError):
        await world.call(None, "GET", "/version")
    await asyncio.sleep(0.4)
    assert (await world.call(None, "GET", "/version")).status == 200


# --- Forgejo -------------------------------------------------------------------------------------


async def test_forgejo_mode(fj_world):
    w = fj_world
    pull = await w.forge.create_pull(w.repo, w.alice, head="feature", title="Feature", files={"a": "b"})
    await w.forge.create_comment(w.repo, pull.number, w.bob, "/review")
    headers, body = w.receiver.received[-1]
    assert headers["X-Forgejo-Event-Type"] == headers["X-Gitea-Event-Type"] == "pull_request_comment"
    assert headers["X-Forgejo-Signature"] == hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert "X-Gitea-Hook-Installation-Target-Type" not in headers
    payload = json.loads(body)
    assert payload["sender"]["email"] == "bob@noreply.127.0.0.1" and "pronouns" in payload["sender"]
    assert (await w.call(None, "GET", "/version")).json["version"].startswith("15.")
    assert (await w.call(w.bot, "POST", "/repos/acme/widgets/issues/99/comments", body={"body": "x"})).status == 404
    w.forge.add_label(w.repo, "kind/bug")
    await w.forge.set_labels(w.repo, pull.number, w.bob, ["kind/bug"])
    removed = await w.call(w.bot, "DELETE", f"/repos/acme/widgets/issues/{pull.number}/labels/kind%2Fbug")
    assert removed.status == 204 and w.forge.label_names(w.repo, pull.number) == []
