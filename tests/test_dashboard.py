"""The dashboard over real HTTP and in a real headless Chromium: tokens, escaping, a live log tail."""

import asyncio
import logging

import aiohttp
import pytest

from bot.settings import Settings

from .browser import Browser
from .helpers import dispatch, reported

READ_TOKEN = "read-token-for-the-dashboard"
ADMIN_TOKEN = "admin-token-for-the-operator"


async def get(url, **kwargs) -> tuple[int, str, aiohttp.ClientResponse]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, allow_redirects=False, **kwargs) as resp:
            return resp.status, await resp.text(), resp


# Access ---------------------------------------------------------------------------------------


@pytest.fixture
async def bot(make_bot):
    return await make_bot(frozen=True, read_token=READ_TOKEN, admin_token=ADMIN_TOKEN)


@pytest.mark.parametrize("path", ["/", "/runs/1", "/runs/1/log"])
async def test_without_a_token_the_pages_answer_401(bot, path):
    status, body, _ = await get(bot.url + path)
    assert status == 401 and "?token=" in body


@pytest.mark.parametrize("token", [READ_TOKEN, ADMIN_TOKEN])
async def test_either_token_opens_the_dashboard_as_a_bearer(bot, token):
    status, body, resp = await get(bot.url + "/", headers={"Authorization": f"Bearer {token}"})
    assert status == 200 and "Pools" in body and "Queue" in body
    assert "nonce-" in resp.headers["Content-Security-Policy"]


@pytest.mark.parametrize("how", ["bearer", "query", "cookie"])
async def test_a_wrong_token_answers_401(bot, how):
    wrong = READ_TOKEN + "x"
    kwargs = {
        "bearer": {"headers": {"Authorization": f"Bearer {wrong}"}},
        "query": {"params": {"token": wrong}},
        "cookie": {"cookies": {"dispatchbot_session": wrong}},
    }[how]
    status, body, resp = await get(bot.url + "/", **kwargs)
    assert status == 401 and "Wrong token" in body
    assert "Set-Cookie" not in resp.headers


async def test_the_token_in_the_address_becomes_a_strict_httponly_cookie(bot):
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # unsafe: an IP host
        async with session.get(bot.url + "/?token=" + READ_TOKEN, allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/"
            cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and READ_TOKEN not in cookie
        async with session.get(bot.url + "/") as resp:  # the session's cookie jar sends it back
            assert resp.status == 200 and "Pools" in await resp.text()


async def test_without_a_configured_token_the_dashboard_is_off(make_bot, caplog):
    caplog.set_level(logging.INFO, logger="bot.admin.dashboard")
    bot = await make_bot(frozen=True)
    assert "the dashboard is off" in caplog.text
    for path in ("/", "/runs/1"):
        status, _, _ = await get(bot.url + path, params={"token": "anything"})
        assert status == 404
    assert (await get(bot.url + "/metrics"))[0] == 200  # public by default


def test_both_tokens_are_masked_like_every_secret(tmp_path):
    settings = Settings(read_token=READ_TOKEN, admin_token=ADMIN_TOKEN, data_dir=tmp_path)
    assert {READ_TOKEN, ADMIN_TOKEN} <= set(settings.secrets())
    assert READ_TOKEN not in repr(settings) and ADMIN_TOKEN not in repr(settings)


async def test_hostile_task_text_is_escaped(world, bot):
    await dispatch(world, "/dispatch codex fix <img src=x onerror=alert(1)> and </td><script>alert(2)</script>")
    await bot.settle()
    [run] = await bot.store.runs()
    auth = {"Authorization": f"Bearer {READ_TOKEN}"}
    for path in ("/", f"/runs/{run.id}"):
        status, body, _ = await get(bot.url + path, headers=auth)
        assert status == 200
        assert "&lt;img src=x onerror=alert(1)&gt;" in body and "<img" not in body
        assert "&lt;script&gt;alert(2)" in body and "<script>alert" not in body


async def test_the_main_page_lists_the_queue_with_positions_and_the_pools(world, make_bot):
    bot = await make_bot(frozen=True, read_token=READ_TOKEN, pools={"codex": {"limit": 3}})
    for n in range(2):
        await dispatch(world, f"/dispatch codex task number {n}", title=f"Issue {n}")
    await bot.settle()
    await bot.store.set_pool_frozen("codex", True)
    status, body, _ = await get(bot.url + "/", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert status == 200
    assert "frozen: nothing starts" in body
    assert body.index("task number 0") < body.index("task number 1")
    assert '<td>codex</td><td><span class="num">0 / 3</span></td><td>2</td>' in body
    assert f'href="{world["forge"].url}/acme/widgets/issues/1"' in body


async def test_the_main_page_lists_the_replicas_with_their_runs(world, make_bot):
    bot = await make_bot(frozen=True, read_token=READ_TOKEN)
    await dispatch(world, "/dispatch codex task", title="Issue")
    await bot.settle()
    await bot.store.heartbeat("bot-9", "host-9", 3)
    [run] = await bot.store.claim(max_running=4, pool_limits={}, spawn_intervals={}, replica="bot-9")
    status, body, _ = await get(bot.url + "/", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert status == 200
    assert f"<td>{bot.services.replica} (this one)</td>" in body
    assert '<td>bot-9</td><td>host-9</td><td><span class="pill running">alive</span></td>' in body
    assert f'<span class="num">1 / 3</span></td><td><a href="/runs/{run.id}">#{run.id}</a></td>' in body


async def test_a_run_on_a_branch_links_to_the_branch_not_to_an_issue(world, make_bot):
    forge = world["forge"]
    await forge.push_commit(world["repo"], "develop", {"DEVELOP.md": "wip\n"}, message="wip")
    bot = await make_bot(frozen=True, read_token=READ_TOKEN, admin_token=ADMIN_TOKEN)
    async with aiohttp.ClientSession() as session:
        async with session.post(bot.url + "/api/dispatch", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                json={"repo": "acme/widgets", "branch": "develop", "task": "tidy"}) as resp:
            assert resp.status == 200, await resp.text()
            run_id = (await resp.json())["run_id"]
    for path in ("/", f"/runs/{run_id}"):
        status, body, _ = await get(bot.url + path, headers={"Authorization": f"Bearer {READ_TOKEN}"})
        assert status == 200
        assert f'href="{forge.url}/acme/widgets/src/branch/develop"' in body and ">acme/widgets branch develop<" in body
        assert "/issues/0" not in body


async def test_the_log_stream_of_an_ended_run_says_end_at_once(world, make_bot):
    bot = await make_bot(read_token=READ_TOKEN, frozen=True)
    await dispatch(world, "/dispatch codex something")
    await bot.settle()
    [run] = await bot.store.runs()
    await bot.store.transition(run.id, "cancelled", reason="changed my mind")
    status, body, resp = await get(bot.url + f"/runs/{run.id}/log", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    assert body == "event: end\ndata: cancelled\n\n"


async def test_an_open_log_stream_does_not_hold_up_the_shutdown(world, make_bot):
    bot = await make_bot(read_token=READ_TOKEN, frozen=True)
    await dispatch(world, "/dispatch codex wait in the queue")
    await bot.settle()
    async with aiohttp.ClientSession() as session:
        async with session.get(bot.url + "/runs/1/log", headers={"Authorization": f"Bearer {READ_TOKEN}"}) as resp:
            assert resp.status == 200  # the run is queued: the stream stays open
            async with asyncio.timeout(10):
                await bot.stop()


@pytest.mark.docker
async def test_recent_outcomes_link_to_the_pull_request_and_the_review(world, engine_bot):
    forge, repo, bob = world["forge"], world["repo"], world["bob"]
    bot = await engine_bot(read_token=READ_TOKEN)
    pull = await forge.create_pull(repo, bob, head="feature", title="Feature", files={"feature.py": "x = 1\n"})
    await forge.create_comment(repo, pull.issue.number, bob, "/review")
    await dispatch(world, "/dispatch codex add notes scenario:edit-commit")

    async def all_reported():
        runs = await bot.store.runs()
        facets = [await bot.store.reported(r.id) for r in runs]
        return len(runs) == 2 and "review" in facets[0] and "pull" in facets[1]

    await bot.wait_for(all_reported, timeout=60)
    status, body, _ = await get(bot.url + "/", headers={"Authorization": f"Bearer {READ_TOKEN}"})
    assert status == 200
    base = f"{forge.url}/acme/widgets"
    assert f'href="{base}/pulls/{pull.issue.number}/files"' in body  # the review
    [opened] = [p for p in forge.pulls(repo) if p.issue.number != pull.issue.number]
    assert f">PR #{opened.issue.number}</a>" in body
    assert body.count("status comment") == 2


# In a real browser ----------------------------------------------------------------------------


@pytest.mark.docker
async def test_chromium_shows_the_pages_and_the_log_tail_grows_while_the_run_lives(world, engine_bot, tmp_path):
    bot = await engine_bot(read_token=READ_TOKEN, pools={"codex": {"limit": 1}})
    await dispatch(world, "/dispatch gemini look around scenario:no-change", title="Earlier work")
    await bot.wait_for(lambda: _states(bot, {"completed"}))
    await dispatch(world, "/dispatch codex tick along scenario:ticks:60", title="Live output")
    await dispatch(world, "/dispatch codex wait for your turn scenario:no-change", title="Waiting its turn")
    await bot.settle()  # both runs are requested
    live = await bot.wait_for(lambda: _running(bot))

    browser = Browser(tmp_path / "chromium")
    await browser.start()
    try:
        await browser.open(f"{bot.url}/?token={READ_TOKEN}")
        assert await browser.evaluate("location.pathname + location.search") == "/"  # the token left the address
        text = await browser.evaluate("document.body.innerText")
        assert "tick along" in text and "wait for your turn" in text and "look around" in text, text
        await browser.screenshot("dashboard-main")

        await browser.open(f"{bot.url}/runs/{live.id}")
        lines = "document.querySelectorAll('#log .line').length"
        first = await browser.wait_for(f"{lines} > 0 && {lines}")
        grown = await browser.wait_for(f"{lines} > {first} + 3 && {lines}")
        assert grown > first
        tail = await browser.evaluate("document.getElementById('log').innerText")
        assert "tick 1" in tail
        await browser.screenshot("dashboard-run-live")

        # The stream ends with the run and the page reloads with its outcome and stored log.
        await browser.wait_for("document.querySelector('.pill.completed') !== null", within=60)
        assert "running" in await browser.evaluate("document.body.innerText")  # a transition listed
        await reported(bot, live.id)  # its pull request is opened by the reporter, after the state
        [pull] = world["forge"].pulls(world["repo"])
        await browser.wait_for(f"document.querySelector('a[href$=\"/pulls/{pull.issue.number}\"]') !== null")
        await browser.screenshot("dashboard-run-ended")
    finally:
        await browser.close()


async def _states(bot, states):
    return [r for r in await bot.store.runs() if r.state in states]


async def _running(bot):
    runs = [r for r in await bot.store.runs() if r.state == "running" and "tick" in r.task]
    return runs[0] if runs else None
