"""What a run's model calls used, shown everywhere: the status comment's live progress (rate-limited)
and final usage line, the PR footer, the admin API, /metrics and the dashboard (in a real Chromium).

The runs are real (fake Forge, real Docker, scripted agent); the usage a metered model call would
add is added through the store's own ``add_usage``, with pauses between calls as a working agent's.
"""

import asyncio
import re
import time

import aiohttp
import pytest

from bot.report import sentences
from bot.report import usage as words
from bot.store import ModelUsage, Usage, utc_day

from tests.fakemodel import FakeModel

from .browser import ARTIFACTS, Browser
from .helpers import bot_comments, dispatch, ended, reported
from .test_client import cli
from .test_mcp import TOKEN as ADMIN_TOKEN
from .test_mcp import call as mcp_call
from .test_mcp import http_session
from .test_metrics import scrape, value

INTERVAL = 1.0  # seconds: progress_interval in these tests


def keep(name: str, body: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_text(body)


def call(n: int, *, model: str = "gpt-5", cost: float | None = 0.011) -> ModelUsage:
    """The n-th model call of a run: known tokens, so sums can be checked."""
    return ModelUsage(model, 1, 10_000 + n, 500 + n, 8_000, 100, cost, 0.25)


async def add_calls(bot, run_id: int, count: int, *, pause: float, first: int = 0) -> list[ModelUsage]:
    """Meter ``count`` calls into the run with ``pause`` seconds between them, each with an action."""
    added = []
    for n in range(first, first + count):
        if added:
            await asyncio.sleep(pause)  # the agent thinks between two calls
        used = call(n)
        now = time.time()
        await bot.store.add_usage(run_id, used, day=utc_day(now), at=now, actions=(f"$ pytest -q tests/test_{n}.py",))
        added.append(used)
    return added


async def running(bot):
    found = [r for r in await bot.store.runs() if r.state == "running"]
    return found[0] if found else None


def comment_writes(world, run_id: int) -> list[str]:
    """Every body the bot wrote into the run's status comment, in order (its post, then its edits)."""
    marker = sentences.marker("run", str(run_id))
    bodies = [r.body["body"] for r in world["forge"].requests
              if r.method in ("POST", "PATCH") and r.status < 300 and isinstance(r.body, dict)
              and marker in (r.body.get("body") or "")]
    return bodies


@pytest.mark.docker
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_progress_is_edited_at_most_every_interval_and_the_end_shows_the_usage_line(
    world, engine_bot, backend, request
):
    store = {"store_url": request.getfixturevalue("postgres_url")} if backend == "postgres" else {}
    bot = await engine_bot(progress_interval=INTERVAL, admin_token=ADMIN_TOKEN, **store)
    issue = await dispatch(world, "/dispatch codex tidy the tests scenario:slow-ok:9")
    run = await bot.wait_for(lambda: running(bot))
    first = time.time()
    added = await add_calls(bot, run.id, 16, pause=0.15)  # each wakes the reporter: far more than it may show
    last = time.time()
    [run] = await ended(bot)
    run = await reported(bot, run.id)
    assert run.state == "completed", run.reason

    writes = comment_writes(world, run.id)
    working = [b for b in writes if "🤖 running" in b]
    progress = [b for b in working if "model call" in b]
    assert len(set(progress)) >= 2, working  # the counts moved on while it worked
    history = await bot.store.history(run.id)
    began = next(c.at for c in history if c.to_state == "running")
    left = next(c.at for c in history if c.from_state == "running")
    assert len(working) <= 1 + (left - began) / INTERVAL, (len(working), left - began)
    # While the calls came, one edit per interval at most, and one held back for the last of them.
    assert len(progress) <= 1 + (last - first) / INTERVAL + 1, (len(progress), last - first)
    assert "Last actions:" in progress[-1] and "$ pytest -q tests/test_" in progress[-1]
    keep("progress-comment.md", progress[-1])  # as the Forge got them, for the change's note

    total = Usage(tuple(added)).total
    line = sentences.usage_line(await bot.store.usage(run.id))
    assert line.startswith(f"Usage: {total.calls} model calls · {total.input_tokens:,} tokens in")
    [final] = bot_comments(world, issue.number)
    assert "✅ completed" in final.body and line in final.body and "Working for" not in final.body
    [pull] = world["forge"].pulls(world["repo"])
    assert line in pull.issue.body  # the PR's footer

    # The API and the metrics say what the comment says.
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as session:
        async with session.get(f"{bot.url}/api/runs/{run.id}") as resp:
            shown = (await resp.json())["usage"]
        async with session.get(f"{bot.url}/api/usage") as resp:
            totals = await resp.json()
    assert f"Usage: {shown['line']}." == line
    assert shown["total"]["calls"] == total.calls == 16
    assert shown["total"]["input_tokens"] == total.input_tokens
    assert shown["by_model"][0]["model"] == "gpt-5" and shown["actions"][-1] == "$ pytest -q tests/test_15.py"
    async with http_session(bot) as session:
        [status] = (await mcp_call(session, "agentic_status", run_id=run.id))["runs"]
    assert status["usage"] == shown  # MCP's agentic_status
    [today] = totals["day"]
    assert (today["repo"], today["agent"], today["runs"]) == ("acme/widgets", "codex", 1)
    assert today["usage"]["line"] == shown["line"]
    samples = await scrape(bot)
    labels = {"agent": "codex", "model": "gpt-5"}
    assert value(samples, "dispatchbot_model_calls_total", **labels) == total.calls
    assert value(samples, "dispatchbot_model_tokens_total", kind="input", **labels) == total.input_tokens
    assert value(samples, "dispatchbot_model_tokens_total", kind="cached", **labels) == total.cached_tokens
    assert value(samples, "dispatchbot_model_tokens_total", kind="output", **labels) == total.output_tokens
    assert value(samples, "dispatchbot_model_tokens_total", kind="reasoning", **labels) == total.reasoning_tokens
    assert value(samples, "dispatchbot_model_cost_usd_total", **labels) == pytest.approx(total.cost_usd)
    assert words.cost(total.cost_usd) in final.body
    keep("final-comment.md", final.body)


@pytest.mark.docker
async def test_a_run_with_usage_but_nothing_new_is_not_edited_again(world, engine_bot):
    """Only the clock moving is no reason to edit: after the last call, no further progress edit."""
    bot = await engine_bot(progress_interval=0.2)
    await dispatch(world, "/dispatch codex wait a while scenario:slow-ok:6")
    run = await bot.wait_for(lambda: running(bot))
    await add_calls(bot, run.id, 1, pause=0)

    async def shown_call():
        return [b for b in comment_writes(world, run.id) if "1 model call ·" in b]

    await bot.wait_for(shown_call)
    writes = _working(world, run.id)
    # The run works on for seconds, many intervals: a further edit would come within one.
    await bot.wait_for(lambda: _state_not(bot, run.id, "running"), timeout=30)
    assert _working(world, run.id) == writes


def _working(world, run_id):
    return [b for b in comment_writes(world, run_id) if "🤖 running" in b]


async def _state_not(bot, run_id, state):
    return (await bot.store.get(run_id)).state != state


@pytest.mark.docker
async def test_the_dashboard_run_page_shows_the_progress_live(world, engine_bot, tmp_path):
    bot = await engine_bot(read_token=ADMIN_TOKEN, progress_interval=INTERVAL)
    await dispatch(world, "/dispatch codex tidy the tests scenario:slow-ok:20", title="Tidy the tests")
    run = await bot.wait_for(lambda: running(bot))
    await add_calls(bot, run.id, 3, pause=0.1)
    browser = Browser(tmp_path / "chromium")
    await browser.start()
    try:
        await browser.open(f"{bot.url}/runs/{run.id}?token={ADMIN_TOKEN}")
        line = "document.getElementById('usage-line').textContent"
        text = await browser.wait_for(f"{line}.includes('3 model calls') && {line}")
        assert text.startswith("Working for ") and "tokens in" in text and "$0.03" in text
        await add_calls(bot, run.id, 2, pause=0.3, first=3)  # while the page is open: it follows
        text = await browser.wait_for(f"{line}.includes('5 model calls') && {line}")
        actions = await browser.evaluate("document.getElementById('usage-actions').textContent")
        assert actions.splitlines()[-1] == "$ pytest -q tests/test_4.py"
        rows = await browser.evaluate("document.querySelectorAll('#usage-rows tr').length")
        assert rows == 1
        # The Forge shows the same numbers.
        comment = await bot.wait_for(lambda: [b for b in comment_writes(world, run.id) if "5 model calls" in b])
        assert re.search(r"5 model calls · [\d,]+ tokens in", comment[-1])
        await browser.screenshot("dashboard-run-usage-live")
        await browser.open(f"{bot.url}/")
        main = await browser.evaluate("document.body.innerText")
        assert "5 calls ·" in main and "Model usage" in main and "last day" in main
        await browser.screenshot("dashboard-main-usage")
    finally:
        await browser.close()
    await ended(bot)


# A Messages call with claude's file and shell tools on offer, sent by the scripted agent through the
# gateway (busybox nc; stdin held open until the answer is in), four times with pauses between.
GATEWAY_SCRIPT = r"""
url=$ANTHROPIC_BASE_URL; hostport=${url#http://}; hostport=${hostport%%/*}; path=/${url#http://*/}
body='{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"go"}],"tools":[{"name":"Write","input_schema":{"type":"object"}},{"name":"Bash","input_schema":{"type":"object"}}]}'
for i in 1 2 3 4; do
  { printf 'POST %s/v1/messages HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "$path" "$hostport" "${#body}" "$body"; sleep 1; } | nc -w 3 "${hostport%:*}" "${hostport#*:}" >/dev/null
  sleep 1.2
done
echo "- notes" >>AGENT_NOTES.md && git add AGENT_NOTES.md && git commit -q -m "docs: notes"
echo "four calls made"
"""


@pytest.mark.docker
async def test_calls_metered_by_the_gateway_show_as_progress_then_as_the_usage_line(world, engine_bot):
    """The real path: the agent's calls pass the gateway, which meters them into the store; the
    reporter shows them while the run works and sums them at its end."""
    model = FakeModel(workdir="/workspace/repo")
    await model.start()
    try:
        price = {"input": 3.0, "output": 15.0, "cached": 0.3}
        bot = await engine_bot(base_urls={"claude": model.url}, progress_interval=INTERVAL,
                               prices={"claude-sonnet-4-5": price})
        forge, repo = world["forge"], world["repo"]
        script = f"BEGIN-SCRIPT\n{GATEWAY_SCRIPT.strip()}\nEND-SCRIPT"  # the prompt quotes it, the agent unquotes it
        issue = await forge.create_issue(repo, world["bob"], title="Call the model", body=script)
        await forge.create_comment(repo, issue.number, world["bob"], "/dispatch claude scenario:script")
        [run] = await ended(bot)
        run = await reported(bot, run.id)
        assert run.state == "completed", (run.reason, run.result.log_tail)
    finally:
        await model.close()
    assert len(model.calls("/v1/messages")) == 4, run.result.log_tail
    usage = await bot.store.usage(run.id)
    assert usage.total.calls == 4 and usage.total.input_tokens == 400 and usage.total.output_tokens == 40
    assert 0 < usage.total.wait_seconds < 10, usage.total  # the gateway timed the answers
    progress = [b for b in comment_writes(world, run.id) if "🤖 running" in b and "model call" in b]
    assert len(set(progress)) >= 2, progress
    assert any("Last actions:" in b and "HELLO.md" in b for b in progress), progress[-1]
    [final] = bot_comments(world, issue.number)
    assert "Usage: 4 model calls · 400 tokens in · 40 out · <$0.01 · " in final.body, final.body
    keep("gateway-progress-comment.md", progress[-1])
    keep("gateway-final-comment.md", final.body)


async def queued_run(world, make_bot, **settings):
    """A frozen bot (its admin token opens the API and the dashboard) with one queued run, for usage added by hand."""
    bot = await make_bot(frozen=True, admin_token=ADMIN_TOKEN, **settings)
    await dispatch(world, "/dispatch codex count it", title="Count")
    await bot.settle()
    [run] = await bot.store.runs()
    return bot, run


async def page(bot, path: str) -> str:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as session:
        async with session.get(bot.url + path) as resp:
            assert resp.status == 200
            return await resp.text()


async def test_the_dashboard_says_which_daily_budget_keeps_a_queued_run_waiting(world, make_bot):
    bot, run = await queued_run(world, make_bot, budgets={"daily_usd": 0.01, "pools": {"codex": {"daily_usd": 1.0}}})
    now = time.time()
    await bot.store.add_usage(run.id, call(0, cost=0.02), day=utc_day(now), at=now)
    body = await page(bot, "/")
    assert "daily budget of repository acme/widgets spent: $0.02 of $0.01; waits until " in body
    assert "<td>$0.02 of $1.00 today</td>" in body  # the pool's own budget, not spent


async def test_the_cli_shows_a_runs_usage_by_model_and_its_last_actions(world, make_bot):
    bot, run = await queued_run(world, make_bot)
    now = time.time()
    await bot.store.add_usage(run.id, call(0), day=utc_day(now), at=now, actions=("read src/app.py",))
    await bot.store.add_usage(run.id, call(1, model="local-model", cost=None), day=utc_day(now), at=now)
    code, out, err = await cli(bot.url, "show", str(run.id))
    assert code == 0, err
    line = words.usage_line(await bot.store.usage(run.id))
    assert f"usage: {line}" in out and "cost unknown" in line
    rows = out.split("usage: ", 1)[1].splitlines()
    assert rows[1].split() == ["MODEL", "CALLS", "INPUT_TOKENS", "CACHED_TOKENS", "OUTPUT_TOKENS",
                               "REASONING_TOKENS", "COST_USD", "WAIT_SECONDS"]
    assert rows[2].split()[:3] == ["gpt-5", "1", "10000"] and rows[3].split()[6] == "-"  # no price, no cost
    assert out.rstrip().endswith("last actions:\n  read src/app.py")


async def test_the_agents_actions_are_escaped_on_the_run_page(world, make_bot):
    bot, run = await queued_run(world, make_bot)
    now = time.time()
    hostile = '$ echo "<script>alert(1)</script>" <img src=x onerror=alert(2)>'
    await bot.store.add_usage(run.id, call(0, model="<b>m</b>"), day=utc_day(now), at=now, actions=(hostile,))
    body = await page(bot, f"/runs/{run.id}")
    assert "<script>alert" not in body and "<img" not in body and "<b>m</b>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "&lt;b&gt;m&lt;/b&gt;" in body


# Words ----------------------------------------------------------------------------------------


def test_the_usage_line_says_cost_unknown_when_any_model_has_no_price():
    usage = Usage((ModelUsage("gpt-5", 2, 48_210, 3_100, 30_000, 0, 0.42, 130.0),
                   ModelUsage("mystery", 1, 10, 5, 0, 0, None, 1.0)))
    assert words.usage_line(usage) == (
        "3 model calls · 48,220 tokens in (30,000 cached) · 3,105 out · cost unknown · 2m11s waiting on the model"
    )
    priced = Usage((ModelUsage("gpt-5", 12, 48_210, 3_100, 30_000, 1_000, 0.42, 130.0),))
    assert words.usage_line(priced) == (
        "12 model calls · 48,210 tokens in (30,000 cached) · 3,100 out (1,000 reasoning) · $0.42"
        " · 2m10s waiting on the model"
    )
    assert words.usage_line(Usage()) == "" and words.brief(Usage()) == "—"
    assert words.cost(0.001) == "<$0.01" and words.cost(0.0) == "$0.00"
    assert words.waited(0.02) == "<0.1s" and words.waited(0.0) == "0.0s" and words.waited(75) == "1m15s"
    assert words.progress_line(Usage((ModelUsage("m", 1, 1, 1),)), 3725) == (
        "Working for 1h02m: 1 model call · 1 tokens in · 1 out · cost unknown · 0.0s waiting on the model"
    )


def test_a_run_of_the_same_action_is_said_once_with_its_count():
    usage = Usage((), ("read a.py", "wrote a.py", "wrote a.py", "wrote a.py", "read a.py"))
    assert words.actions(usage) == ["read a.py", "wrote a.py (×3)", "read a.py"]


def test_the_agents_actions_are_fenced_so_they_mention_nobody_and_add_no_markup():
    hostile = ("cat ``` @bob <img src=x> Closes #1", "````")
    lines = sentences.progress_lines(Usage((call(0),), hostile), 12)
    block = "\n".join(lines)
    fence = block.split("Last actions:\n", 1)[1].split("\n", 1)[0]
    assert set(fence) == {"`"} and len(fence) > 4  # longer than any run of backticks inside
    assert block.endswith(fence) and hostile[0] in block


@pytest.mark.docker
async def test_a_queued_runs_comment_says_so_when_a_run_before_it_spends_the_daily_budget(world, engine_bot):
    """The budget is spent after the second run was queued: its comment says so while it waits,
    not only once the run itself changes."""
    bot = await engine_bot(max_running=1, budgets={"daily_usd": 0.01})
    await dispatch(world, "/dispatch codex wait a while scenario:slow-ok:20", title="First")
    first = await bot.wait_for(lambda: running(bot))
    second_issue = await dispatch(world, "/dispatch codex then this", title="Second")

    async def second_queued():
        found = [r for r in await bot.store.runs() if r.number == second_issue.number]
        if not found or not (await bot.store.reported(found[0].id)).get("version") == found[0].version:
            return None
        return found[0]

    second = await bot.wait_for(second_queued)
    assert second.state == "queued" and "Position 1 in the queue" in comment_writes(world, second.id)[-1]
    now = time.time()
    await bot.store.add_usage(first.id, call(0, cost=0.02), day=utc_day(now), at=now)

    async def says_spent():
        return any("spent its daily budget of $0.01" in b for b in comment_writes(world, second.id))

    await bot.wait_for(says_spent, timeout=10)
    assert (await bot.store.get(second.id)).state == "queued"
