"""The admin API through the real HTTP server: auth on every route, the operations, bad input."""

import json
import socket
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request

from bot.admin.api import authorized

from tests.fakeforge import git
from tests.harness import AGENT_KEYS
from tests.helpers import wait_for
from tests.process import BotProcess

TOKEN = "admin-token-for-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_DAILY_BUDGET = {"daily_usd": None, "spent_today_usd": None, "daily_spent": False}

ROUTES = [
    ("GET", "/api/runs"), ("GET", "/api/runs/1"), ("GET", "/api/runs/1/log"), ("POST", "/api/runs/1/cancel"),
    ("POST", "/api/runs/1/retry"), ("POST", "/api/runs/1/answer"), ("GET", "/api/pools"), ("POST", "/api/freeze"),
    ("POST", "/api/thaw"), ("POST", "/api/poke"), ("POST", "/api/dispatch"), ("GET", "/api/replicas"),
]


async def call(bot, method, path, body=None, headers=AUTH):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, bot.url + path, json=body, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


@pytest.fixture
async def api_bot(make_bot, world):
    """A frozen bot (nothing starts, so no Docker is needed) with the API on, and one issue."""
    bot = await make_bot(admin_token=TOKEN, frozen=True)
    world["issue"] = await world["forge"].create_issue(world["repo"], world["bob"], title="Tidy the widgets")
    return bot


async def test_without_a_token_setting_the_api_is_off(make_bot, caplog):
    caplog.set_level("INFO", logger="bot.admin.api")
    bot = await make_bot()
    assert "the admin API (/api/) and MCP (/mcp) are off: no admin_token is set" in caplog.text
    for method, path in ROUTES:
        status, body = await call(bot, method, path, headers=AUTH)
        assert (status, body) == (404, {"error": "the admin API is off: no admin_token is set"}), path


async def test_an_empty_admin_token_is_no_token(make_bot, caplog):
    caplog.set_level("INFO", logger="bot.admin.api")
    bot = await make_bot(admin_token="")
    assert "the admin API (/api/) and MCP (/mcp) are off: no admin_token is set" in caplog.text
    for headers in ({"Authorization": "Bearer"}, {"Authorization": "Bearer "}):
        assert (await call(bot, "GET", "/api/runs", headers=headers))[0] == 404
        assert (await call(bot, "POST", "/mcp", {}, headers=headers))[0] == 404


def test_an_empty_token_never_authorizes():
    empty = make_mocked_request("GET", "/api/runs", headers={"Authorization": "Bearer "})
    assert not authorized(empty, "") and not authorized(empty, TOKEN)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": TOKEN}], ids=["none", "wrong", "basic", "bare"])
async def test_every_route_refuses_a_missing_or_wrong_token(api_bot, headers):
    for method, path in ROUTES:
        status, body = await call(api_bot, method, path, headers=headers)
        assert status == 401 and "admin token" in body["error"], path
    assert await api_bot.store.runs() == []


async def test_dispatch_list_show_cancel_retry_with_the_token(api_bot, world):
    issue = world["issue"]
    status, out = await call(api_bot, "POST", "/api/dispatch", {"repo": "acme/widgets", "issue": issue.number,
                                                                "agent": "claude:opus", "task": "tidy up"})
    assert status == 200 and out["success"] and out["state"] == "queued" and out["agent"] == "claude", out
    run = await api_bot.store.get(out["run_id"])
    assert (run.trigger, run.requested_by, run.model, run.task) == ("api", "api", "opus", "tidy up")
    assert out["workspace_dir"].endswith("/workspaces/acme/widgets/issue-1")

    status, runs = await call(api_bot, "GET", "/api/runs?state=queued&repo=acme/widgets&agent=claude")
    assert status == 200 and [r["id"] for r in runs] == [run.id]
    for query in ("state=running", "repo=acme/other", "agent=codex"):
        assert (await call(api_bot, "GET", f"/api/runs?{query}"))[1] == [], query

    status, shown = await call(api_bot, "GET", f"/api/runs/{run.id}")
    assert status == 200 and shown["transitions"] == [{"from_state": None, "to_state": "queued", "reason": "api"}]
    assert shown["links"]["issue"].endswith(f"/acme/widgets/issues/{issue.number}")
    assert (await call(api_bot, "GET", f"/api/runs/{run.id}/log")) == (200, {"id": run.id, "state": "queued", "log": ""})

    async def status_comment():
        comments = world["forge"].comments(world["repo"], issue.number)
        return [c.body for c in comments if "Started through the admin API" in c.body]

    await api_bot.wait_for(status_comment)

    status, cancelled = await call(api_bot, "POST", f"/api/runs/{run.id}/cancel")
    assert status == 200 and cancelled["state"] == "cancelled"
    assert (await call(api_bot, "POST", f"/api/runs/{run.id}/cancel"))[0] == 409
    status, retried = await call(api_bot, "POST", f"/api/runs/{run.id}/retry")
    assert status == 200 and retried["state"] == "queued" and retried["id"] != run.id
    assert (await api_bot.store.get(retried["id"])).retry_of == run.id
    status, body = await call(api_bot, "POST", f"/api/runs/{retried['id']}/answer", {"text": "yes"})
    assert status == 409 and "only a blocked run" in body["error"]


async def test_answer_resumes_a_blocked_run(api_bot, world):
    _, out = await call(api_bot, "POST", "/api/dispatch", {"repo": "widgets", "org": "acme", "issue": 1})
    store = api_bot.store
    await store.transition(out["run_id"], "preparing")
    await store.transition(out["run_id"], "running")
    await store.transition(out["run_id"], "blocked", question="Which widgets?")
    status, resumed = await call(api_bot, "POST", f"/api/runs/{out['run_id']}/answer", {"text": "the blue ones"})
    assert status == 200 and resumed["state"] == "queued"
    assert (await store.get(out["run_id"])).answer == "the blue ones"


async def test_freeze_and_thaw_globally_and_per_pool(api_bot, world):
    status, view = await call(api_bot, "GET", "/api/pools")
    assert status == 200 and view["frozen"] is True and view["pools"] == []
    await call(api_bot, "POST", "/api/dispatch", {"repo": "acme/widgets", "issue": 1, "agent": "gemini"})
    status, view = await call(api_bot, "POST", "/api/freeze", {"pool": "gemini"})
    assert status == 200
    assert view["pools"] == [{"name": "gemini", "limit": 4, "active": 0, "queued": 1, "frozen": True,
                              "backoff_until": None, **NO_DAILY_BUDGET}]
    status, view = await call(api_bot, "POST", "/api/thaw")
    assert status == 200 and view["frozen"] is False and view["pools"][0]["frozen"] is True
    assert await api_bot.store.flag("frozen") == "0" and (await api_bot.store.pool("gemini")).frozen is True
    status, started = await call(api_bot, "POST", "/api/poke")
    assert status == 200 and started == []  # its pool is still frozen
    assert (await call(api_bot, "POST", "/api/thaw", {"pool": "gemini"}))[1]["pools"][0]["frozen"] is False


async def test_the_replicas_view_shows_every_replica_its_heartbeat_limit_and_runs(api_bot, world):
    store = api_bot.store
    this = api_bot.services.replica
    await call(api_bot, "POST", "/api/dispatch", {"repo": "acme/widgets", "issue": 1, "agent": "codex"})
    await store.heartbeat("bot-9", "host-9", 3)  # another replica on this store, which claims the run
    [theirs] = await store.claim(max_running=4, pool_limits={}, spawn_intervals={}, replica="bot-9",
                                 replica_max_running=3)
    await store.heartbeat("bot-8", "host-8", 2, now=1.0)  # silent for ages
    status, view = await call(api_bot, "GET", "/api/replicas")
    assert status == 200 and view["max_running"] == 4 and view["ttl"] == 300.0
    shown = {r["id"]: (r["host"], r["alive"], r["max_running"], r["runs"], r["this"]) for r in view["replicas"]}
    assert shown == {
        this: (socket.gethostname(), True, 4, [], True), "bot-9": ("host-9", True, 3, [theirs.id], False),
        "bot-8": ("host-8", False, 2, [], False),
    }


@pytest.mark.parametrize("path", ["/api/freeze", "/api/thaw"])
async def test_an_unknown_pool_is_refused_and_no_pool_is_recorded(api_bot, path):
    status, body = await call(api_bot, "POST", path, {"pool": "gemni"})
    assert status == 400 and body["error"].startswith("unknown pool 'gemni'; known pools: "), body
    assert "gemini" in body["error"] and "\n" not in body["error"]
    assert await api_bot.store.pools() == []
    assert (await call(api_bot, "POST", path, {"pool": "codex"}))[0] == 200  # an agent's pool, before any run


@pytest.mark.parametrize(
    "path, body, status, reason",
    [
        ("/api/dispatch", {"repo": "acme/widgets", "issue": 1, "agent": "nope"}, 400, "unknown agent 'nope'; known: "),
        ("/api/dispatch", {"repo": "acme/widgets", "issue": 1, "persona": "pirate"}, 400, "unknown persona 'pirate'"),
        ("/api/dispatch", {"repo": "acme/widgets", "issue": 1, "template": "x"}, 400, "unknown template 'x'; known: "),
        ("/api/dispatch", {"repo": "acme/widgets", "issue": 1, "plan_template": "bugfix"}, 400,
         "plan template 'bugfix' needs variables: symptom"),
        ("/api/dispatch", {"repo": "widgets", "issue": 1}, 400, "repo 'widgets' needs an owner"),
        ("/api/dispatch", {"repo": "acme/widgets"}, 400, "give exactly one of issue, pr, branch or tag"),
        ("/api/dispatch", {"repo": "acme/widgets", "issue": 1, "pr": 2}, 400, "give exactly one of"),
        ("/api/dispatch", {"repo": "acme/widgets", "issue": 1, "colour": "red"}, 400, "colour: Extra inputs"),
        ("/api/dispatch", {"repo": "acme/widgets", "issue": "one"}, 400, "issue: Input should be a valid integer"),
        ("/api/dispatch", {"repo": "acme/widgets", "issue": 99}, 404, "acme/widgets#99 not found on the Forge"),
        ("/api/dispatch", {"repo": "acme/widgets", "pr": 1}, 400, "acme/widgets#1 is an issue; use issue"),
        ("/api/dispatch", [1], 400, "the body must be a JSON object"),
        ("/api/runs/x/cancel", None, 400, "run id 'x' is not a number"),
        ("/api/runs/7/cancel", None, 404, "no run 7"),
        ("/api/runs/7/answer", {}, 400, "text: Field required"),
        ("/api/freeze", {"pool": ""}, 400, "the pool name is empty"),
    ],
)
async def test_bad_input_gets_a_one_line_reason_and_changes_nothing(api_bot, path, body, status, reason):
    got, answer = await call(api_bot, "POST", path, body)
    assert got == status and answer["error"].startswith(reason) and "\n" not in answer["error"], answer
    assert await api_bot.store.runs() == []


async def test_a_retry_is_queued_once_however_often_it_is_posted(api_bot):
    _, out = await call(api_bot, "POST", "/api/dispatch", {"repo": "acme/widgets", "issue": 1})
    await call(api_bot, "POST", f"/api/runs/{out['run_id']}/cancel")
    status, retried = await call(api_bot, "POST", f"/api/runs/{out['run_id']}/retry")
    assert status == 200
    status, body = await call(api_bot, "POST", f"/api/runs/{out['run_id']}/retry")
    assert (status, body) == (409, {"error": f"run {out['run_id']} was already retried as run {retried['id']}"})
    assert len(await api_bot.store.runs()) == 2


async def test_a_dry_run_the_forge_fails_is_a_json_502(api_bot, world):
    world["forge"].faults(1.0, kinds=["before_502"], only=r"/issues/1/comments$")  # read by prepare only
    status, body = await call(api_bot, "POST", "/api/dispatch", {"repo": "acme/widgets", "issue": 1, "dry_run": True})
    assert status == 502 and body["error"].startswith("the Forge failed: GET ") and "\n" not in body["error"], body
    assert await api_bot.store.runs() == []


async def test_bad_json_and_unknown_state(api_bot):
    async with aiohttp.ClientSession() as session:
        async with session.post(api_bot.url + "/api/dispatch", data=b"{nope", headers=AUTH) as resp:
            assert resp.status == 400 and (await resp.json())["error"].startswith("the body is not JSON")
    status, body = await call(api_bot, "GET", "/api/runs?state=sleeping")
    assert status == 400 and body["error"].startswith("unknown state 'sleeping'; known: live, queued")


async def test_the_token_never_reaches_the_log(make_bot, caplog):
    bot = await make_bot(admin_token=TOKEN)
    await call(bot, "GET", "/api/runs", headers={"Authorization": f"Bearer {TOKEN}x"})
    await call(bot, "GET", "/api/runs")
    assert TOKEN not in caplog.text and TOKEN in bot.settings.secrets()


@pytest.mark.docker
async def test_freeze_survives_a_restart_and_nothing_starts_until_thawed(world, agent_image):
    """Frozen globally and per pool, then kill -9 and restart: the runs wait, none lost, none started."""
    forge, repo = world["forge"], world["repo"]
    env = {**AGENT_KEYS, "DISPATCHBOT_IMAGE": agent_image, "DISPATCHBOT_ADMIN_TOKEN": TOKEN,
           "DISPATCHBOT_SCHEDULE__DRAIN": "0.2",
           "DISPATCHBOT_LIMITS": json.dumps({"memory": "256m", "timeout": 60.0, "grace": 1.0})}
    bot = BotProcess(forge.url, world["bot"].token, world["tmp"] / "data", **env)
    await bot.start()
    try:
        assert (await call(bot, "POST", "/api/freeze"))[0] == 200
        assert (await call(bot, "POST", "/api/freeze", {"pool": "codex"}))[0] == 200
        for n in (1, 2):
            await forge.create_issue(repo, world["bob"], title=f"task {n}")
            status, out = await call(bot, "POST", "/api/dispatch", {"repo": "acme/widgets", "issue": n,
                                                                    "task": f"notes {n} scenario:edit-commit"})
            assert status == 200 and out["state"] == "queued"
        bot.kill()
        await bot.start()
        _, view = await call(bot, "GET", "/api/pools")
        assert view["frozen"] and view["pools"] == [{"name": "codex", "limit": 4, "active": 0, "queued": 2,
                                                     "frozen": True, "backoff_until": None, **NO_DAILY_BUDGET}]
        assert (await call(bot, "POST", "/api/poke")) == (200, [])
        await call(bot, "POST", "/api/thaw")
        assert (await call(bot, "POST", "/api/poke")) == (200, [])  # the pool is still frozen
        assert [s for (s,) in bot.query("SELECT to_state FROM transitions")] == ["queued", "queued"]
        await call(bot, "POST", "/api/thaw", {"pool": "codex"})

        async def completed():
            _, runs = await call(bot, "GET", "/api/runs")
            return [r["state"] for r in runs] == ["completed", "completed"]

        await wait_for(completed, timeout=90)
        for (branch,) in bot.query("SELECT branch FROM runs"):
            assert len(forge.git_log(repo, branch)) == 2  # one commit each: each ran once
    finally:
        await bot.stop()


@pytest.mark.docker
async def test_a_dispatch_on_a_branch_without_an_issue_opens_a_pull_request_and_sets_a_status(world, engine_bot):
    forge, repo = world["forge"], world["repo"]
    head = await forge.push_commit(repo, "develop", {"DEVELOP.md": "work in progress\n"}, message="wip")
    bot = await engine_bot(admin_token=TOKEN)
    status, out = await call(bot, "POST", "/api/dispatch", {"repo": "acme/widgets", "branch": "develop",
                                                            "task": "add notes scenario:edit-commit"})
    assert status == 200 and out["state"] == "queued", out
    workspace = Path(out["workspace_dir"])
    assert workspace.parent == bot.settings.data_dir / "workspaces/acme/widgets" and workspace.name.startswith("branch-develop-")

    async def pulled():
        return forge.pulls(repo)

    [pull] = await bot.wait_for(pulled, timeout=60)
    run = await bot.store.get(out["run_id"])
    assert run.state == "completed" and (run.number, run.base_branch) == (0, "develop")
    assert (pull.head_branch, pull.base_branch) == (run.branch, "develop")

    async def linked():  # the reporter records the pull request just after the Forge has it
        _, shown = await call(bot, "GET", f"/api/runs/{run.id}")
        return shown if "pull_request" in shown["links"] else None

    shown = await bot.wait_for(linked)
    assert shown["links"]["branch"].endswith("/acme/widgets/src/branch/develop")
    assert "worked on `develop` (started through the admin API)" in pull.issue.body and "Closes" not in pull.issue.body
    log = forge.git_log(repo, run.branch)
    assert [c.sha for c in log[1:3]] == [head, forge.git_log(repo, "main")[0].sha]  # built on the branch

    async def success():
        status = forge.latest_statuses(repo, head).get("dispatchbot/codex")
        return status if status and status.state == "success" else None

    await bot.wait_for(success)
    prompt = (workspace / ".meta/prompt.md").read_text()
    assert "For: the operator, with no issue" in prompt and "## ISSUE\n\n(none: the task above" in prompt
    assert [c.path for c in forge.requests if "/issues/" in c.path and c.method != "GET"] == []  # no issue to show


async def test_a_dispatch_on_a_tag_opens_a_pull_request_into_the_default_branch_from_the_tags_commit(
    world, engine_bot
):
    forge, repo = world["forge"], world["repo"]
    tagged = await forge.push_commit(repo, "main", {"RELEASE.md": "1.0\n"}, message="release 1.0")
    tagger = {"GIT_COMMITTER_NAME": "Alice", "GIT_COMMITTER_EMAIL": "alice@example.com"}
    git.run(repo.path, "tag", "--annotate", "--message", "release 1.0", "v1.0", tagged, env=tagger)  # peeled by the bot
    later = await forge.push_commit(repo, "main", {"NEXT.md": "after 1.0\n"}, message="after the release")
    bot = await engine_bot(admin_token=TOKEN)
    status, out = await call(bot, "POST", "/api/dispatch", {"repo": "acme/widgets", "tag": "v1.0",
                                                            "task": "patch the release scenario:edit-commit"})
    assert status == 200 and out["state"] == "queued", out
    assert Path(out["workspace_dir"]).name.startswith("tag-v1.0-")

    async def pulled():
        return forge.pulls(repo)

    [pull] = await bot.wait_for(pulled, timeout=60)
    run = await bot.store.get(out["run_id"])
    assert run.state == "completed" and (run.number, run.base_branch) == (0, "main")
    assert (pull.head_branch, pull.base_branch) == (run.branch, "main")
    assert "worked on tag `v1.0` (started through the admin API)" in pull.issue.body
    log = forge.git_log(repo, run.branch)
    assert [c.sha for c in log[1:2]] == [tagged] and later not in [c.sha for c in log]  # one commit on the tag's
    _, shown = await call(bot, "GET", f"/api/runs/{run.id}")
    assert shown["links"]["tag"].endswith("/acme/widgets/src/tag/v1.0")

    async def success():
        status = forge.latest_statuses(repo, tagged).get("dispatchbot/codex")
        return status if status and status.state == "success" else None

    await bot.wait_for(success)
    assert forge.latest_statuses(repo, later) == {}


@pytest.mark.parametrize(
    "body, status, reason",
    [
        ({"branch": "nope", "task": "x"}, 404, "branch 'nope' not found in acme/widgets"),
        ({"branch": "main"}, 400, "a dispatch on a branch needs a task"),
        ({"branch": "-x", "task": "x"}, 400, "invalid branch"),
        ({"tag": "v9", "task": "x"}, 400, "tag 'v9' not found in acme/widgets"),
        ({"tag": "v1..2", "task": "x"}, 400, "invalid tag name"),
        ({"tag": "v1"}, 400, "a dispatch on a tag needs a task"),
    ],
)
async def test_bad_branch_dispatches(api_bot, body, status, reason):
    got, answer = await call(api_bot, "POST", "/api/dispatch", {"repo": "acme/widgets", **body})
    assert got == status and answer["error"].startswith(reason), answer
