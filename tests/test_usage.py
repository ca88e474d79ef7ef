"""Usage, cost and budgets (issue #15): the gateway's meter on each wire format's real shapes,
streamed and not, the scripted model's usage read back, prices, action lines, caps, the pools
view, and the gateway's refusal past a budget (the real CLIs: tests/test_usage_agents.py)."""

from __future__ import annotations

import contextlib
import gzip
import json
import time
from dataclasses import dataclass, replace

import aiohttp
import pytest
from aiohttp import web

from bot.gateway.grants import Grants
from bot.gateway.models import ModelProxy
from bot.gateway.observer import Api, Call, Grant
from bot.settings import Budget, Budgets, Price, Settings
from bot.store import ModelUsage, RunRequest, SqliteStore, utc_day
from bot.store.pools import pools_view
from bot.usage import actions, budgets, prices
from bot.usage.metering import Metering, model_call
from bot.usage.reader import Reader
from tests.fakemodel import FakeModel, Script, Tokens
from tests.helpers import model_api, serve


def sse(*events: tuple[str | None, dict | str], crlf: bool = False) -> bytes:
    end = "\r\n" if crlf else "\n"
    out = ""
    for name, data in events:
        payload = data if isinstance(data, str) else json.dumps(data)
        out += (f"event: {name}{end}" if name else "") + f"data: {payload}{end}{end}"
    return out.encode()


def read(api: Api, body: bytes, size: int | None = None):
    """The reading of ``body`` fed in ``size``-byte chunks (all at once without)."""
    reader = Reader(api)
    step = size or len(body)
    for at in range(0, len(body), step):
        reader.feed(body[at:at + step])
    return reader.finish()


LONG = "x" * 200_000  # a long text delta: passed over, not parsed

RESPONSES_STREAM = sse(
    ("response.created", {"type": "response.created", "sequence_number": 0, "response": {
        "id": "resp_1", "object": "response", "status": "in_progress", "model": "gpt-5-2025-08-07",
        "output": [], "usage": None}}),
    ("response.output_item.added", {"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
                                    "item": {"type": "message", "id": "msg_1", "role": "assistant", "content": []}}),
    ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 2, "item_id": "msg_1",
                                    "output_index": 0, "content_index": 0, "delta": LONG}),
    ("response.output_item.done", {"type": "response.output_item.done", "sequence_number": 3, "output_index": 1,
                                   "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1",
                                            "name": "exec_command", "arguments": "{\"cmd\": \"pytest -q\"}",
                                            "status": "completed"}}),
    ("response.output_item.done", {"type": "response.output_item.done", "sequence_number": 4, "output_index": 2,
                                   "item": {"type": "custom_tool_call", "id": "ctc_1", "call_id": "call_2",
                                            "name": "apply_patch", "status": "completed",
                                            "input": "*** Begin Patch\n*** Update File: src/a.py\n@@\n-x\n+y\n"
                                                     "*** End Patch\n"}}),
    ("response.completed", {"type": "response.completed", "sequence_number": 5, "response": {
        "id": "resp_1", "object": "response", "status": "completed", "model": "gpt-5-2025-08-07", "output": [],
        "usage": {"input_tokens": 5200, "input_tokens_details": {"cached_tokens": 4096}, "output_tokens": 830,
                  "output_tokens_details": {"reasoning_tokens": 512}, "total_tokens": 6030}}}),
)

MESSAGES_STREAM = sse(
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5-20250929",
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 2000,
                  "output_tokens": 1}}}),
    ("ping", {"type": "ping"}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": LONG}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "Edit", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
        "type": "input_json_delta", "partial_json": "{\"file_path\": \"/workspace/repo/src/x.py\", "}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {
        "type": "input_json_delta", "partial_json": "\"old_string\": \"a\", \"new_string\": \"b\"}"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                       "usage": {"output_tokens": 89}}),
    ("message_stop", {"type": "message_stop"}),
)

GEMINI_STREAM = sse(
    (None, {"candidates": [{"content": {"parts": [{"text": LONG}], "role": "model"}, "index": 0}],
            "usageMetadata": {"promptTokenCount": 900, "totalTokenCount": 900}, "modelVersion": "gemini-2.5-pro"}),
    (None, {"candidates": [{"content": {"parts": [{"functionCall": {"name": "run_shell_command",
                                                                    "args": {"command": "ls -la"}}}],
                                        "role": "model"}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 40, "cachedContentTokenCount": 600,
                              "thoughtsTokenCount": 120, "totalTokenCount": 1160},
            "modelVersion": "gemini-2.5-pro", "responseId": "r1"}),
    crlf=True,
)

CHAT_STREAM = sse(
    (None, {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": LONG}, "finish_reason": None}],
            "usage": None}),
    (None, {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                              "function": {"name": "read", "arguments": ""}}]},
                         "finish_reason": None}], "usage": None}),
    (None, {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {
                "arguments": "{\"filePath\": \"/workspace/repo/README.md\"}"}}]}, "finish_reason": None}],
            "usage": None}),
    (None, {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}], "usage": None}),
    (None, {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini-2024-07-18",
            "choices": [], "usage": {"prompt_tokens": 82, "completion_tokens": 18, "total_tokens": 100,
                                     "prompt_tokens_details": {"cached_tokens": 64},
                                     "completion_tokens_details": {"reasoning_tokens": 7}}}),
    (None, "[DONE]"),
)

OLLAMA_STREAM = b"".join(json.dumps(line).encode() + b"\n" for line in (
    {"model": "devstral-24b", "created_at": "2025-08-04T08:52:19Z", "message": {"role": "assistant", "content": LONG},
     "done": False},
    {"model": "devstral-24b", "created_at": "2025-08-04T08:52:20Z", "message": {
        "role": "assistant", "content": "", "tool_calls": [{"function": {"name": "bash",
                                                                        "arguments": {"command": "make test"}}}]},
     "done": False},
    {"model": "devstral-24b", "created_at": "2025-08-04T08:52:21Z", "message": {"role": "assistant", "content": ""},
     "done": True, "done_reason": "stop", "total_duration": 4883583458, "load_duration": 1334875,
     "prompt_eval_count": 26, "prompt_eval_duration": 342546000, "eval_count": 282, "eval_duration": 4535599000},
))

# (api, body, model, input, output, cached, reasoning, tool calls)
STREAMS = [
    (Api.OPENAI_RESPONSES, RESPONSES_STREAM, "gpt-5-2025-08-07", 5200, 830, 4096, 512,
     [("exec_command", {"cmd": "pytest -q"}),
      ("apply_patch", "*** Begin Patch\n*** Update File: src/a.py\n@@\n-x\n+y\n*** End Patch\n")]),
    (Api.ANTHROPIC_MESSAGES, MESSAGES_STREAM, "claude-sonnet-4-5-20250929", 2125, 89, 2000, 0,
     [("Edit", {"file_path": "/workspace/repo/src/x.py", "old_string": "a", "new_string": "b"})]),
    (Api.GEMINI, GEMINI_STREAM, "gemini-2.5-pro", 1000, 160, 600, 120,
     [("run_shell_command", {"command": "ls -la"})]),
    (Api.CHAT_COMPLETIONS, CHAT_STREAM, "gpt-4o-mini-2024-07-18", 82, 18, 64, 7,
     [("read", {"filePath": "/workspace/repo/README.md"})]),
    (Api.OLLAMA, OLLAMA_STREAM, "devstral-24b", 26, 282, 0, 0, [("bash", {"command": "make test"})]),
]


@pytest.mark.parametrize("api, body, model, inp, out, cached, reasoning, tools", STREAMS, ids=lambda v: str(v)[:20])
@pytest.mark.parametrize("size", [None, 1, 7, 4096])
def test_a_streamed_answer_is_read_whatever_its_chunks(api, body, model, inp, out, cached, reasoning, tools, size):
    if size == 1 and len(body) > 50_000:
        body = body.replace(LONG.encode(), b"x" * 3000)  # byte by byte: a shorter text, the same frames
    r = read(api, body, size)
    assert (r.model, r.input_tokens, r.output_tokens, r.cached_tokens, r.reasoning_tokens) == (
        model, inp, out, cached, reasoning)
    assert r.tools == tools


WHOLE = [
    (Api.OPENAI_RESPONSES, {"id": "resp_2", "object": "response", "status": "completed", "model": "gpt-5-2025-08-07",
                            "output": [{"type": "reasoning", "id": "rs_1", "summary": []},
                                       {"type": "function_call", "name": "shell", "call_id": "c",
                                        "arguments": "{\"command\": [\"bash\", \"-lc\", \"cat README.md\"]}"}],
                            "usage": {"input_tokens": 300, "input_tokens_details": {"cached_tokens": 100},
                                      "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 20},
                                      "total_tokens": 350}},
     ("gpt-5-2025-08-07", 300, 50, 100, 20), "ran `cat README.md`"),
    (Api.ANTHROPIC_MESSAGES, {"id": "msg_2", "type": "message", "role": "assistant",
                              "model": "claude-haiku-4-5-20251001",
                              "content": [{"type": "text", "text": "Reading."},
                                          {"type": "tool_use", "id": "toolu_2", "name": "Read",
                                           "input": {"file_path": "/workspace/repo/README.md"}}],
                              "stop_reason": "tool_use", "stop_sequence": None,
                              "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0,
                                        "cache_read_input_tokens": 90, "output_tokens": 12}},
     ("claude-haiku-4-5-20251001", 100, 12, 90, 0), "read README.md"),
    (Api.GEMINI, {"candidates": [{"content": {"parts": [{"functionCall": {"name": "write_file", "args": {
        "file_path": "/workspace/repo/HELLO.md", "content": "hi"}}}], "role": "model"}, "finishReason": "STOP"}],
                  "usageMetadata": {"promptTokenCount": 70, "candidatesTokenCount": 5, "totalTokenCount": 75},
                  "modelVersion": "gemini-2.5-flash"},
     ("gemini-2.5-flash", 70, 5, 0, 0), "wrote HELLO.md"),
    (Api.CHAT_COMPLETIONS, {"id": "chatcmpl-2", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
                            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                                "role": "assistant", "content": None, "tool_calls": [{
                                    "id": "call_9", "type": "function", "function": {
                                        "name": "bash", "arguments": "{\"command\": \"git status\"}"}}]}}],
                            "usage": {"prompt_tokens": 40, "completion_tokens": 9, "total_tokens": 49}},
     ("gpt-4o-2024-08-06", 40, 9, 0, 0), "ran `git status`"),
    (Api.OLLAMA, {"model": "devstral-24b", "created_at": "2025-08-04T08:52:21Z",
                  "message": {"role": "assistant", "content": "done"}, "done": True, "prompt_eval_count": 11,
                  "eval_count": 3},
     ("devstral-24b", 11, 3, 0, 0), None),
]


@pytest.mark.parametrize("api, body, counts, action", WHOLE, ids=lambda v: str(v)[:20])
def test_an_answer_that_does_not_stream_is_read_once_it_ended(api, body, counts, action):
    r = read(api, json.dumps(body).encode(), 100)
    assert (r.model, r.input_tokens, r.output_tokens, r.cached_tokens, r.reasoning_tokens) == counts
    assert actions.lines(r.tools, []) == ([action] if action else [])


def test_a_stream_cut_off_keeps_what_it_reported_so_far():
    cut = MESSAGES_STREAM[:MESSAGES_STREAM.index(b"event: message_delta")]
    r = read(Api.ANTHROPIC_MESSAGES, cut, 1000)
    assert (r.input_tokens, r.output_tokens) == (2125, 1)
    assert [name for name, _ in r.tools] == ["Edit"]


def test_action_lines_are_short_masked_and_name_paths_in_the_working_copy():
    secret = "sk-live-0123456789abcdef"
    lines = actions.lines([
        ("exec_command", {"cmd": f"curl -H 'Authorization: Bearer {secret}' https://example.com/{'a' * 100}"}),
        ("Write", {"file_path": "/workspace/repo/docs/NOTES.md", "content": "x"}),
        ("apply_patch", {"input": "*** Begin Patch\n*** Add File: a.py\n+x\n*** Update File: b.py\n*** End Patch"}),
        ("Grep", {"pattern": "TODO"}),
        ("mystery_tool", {}),
    ], [secret])
    assert secret not in lines[0] and secret[:12] not in lines[0] and lines[0].startswith("ran `curl")
    assert len(lines[0]) == actions.WIDTH and lines[0].endswith("…")
    assert lines[1:] == ["wrote docs/NOTES.md", "applied a patch to a.py (+1 more)", "searched `TODO`",
                         "used mystery_tool"]


def test_a_model_is_priced_by_its_name_or_the_name_it_is_a_dated_snapshot_of():
    table = {"claude-sonnet-4-5": Price(input=3, output=15, cached=0.3), "claude-sonnet-4": Price(input=1, output=1,
                                                                                                   cached=1),
             "gpt-5": Price(input=1.25, output=10, cached=0.125)}
    assert prices.price_of(table, "claude-sonnet-4-5-20250929") is table["claude-sonnet-4-5"]
    assert prices.price_of(table, "anthropic/claude-sonnet-4-5") is table["claude-sonnet-4-5"]
    assert prices.price_of(table, "gpt-5-2025-08-07") is table["gpt-5"]
    assert prices.price_of(table, "gpt-5-codex") is None  # another model, not a snapshot: cost unknown
    assert prices.price_of(table, "claude-sonnet-4-5-haiku") is None
    usage = ModelUsage("gpt-5", 1, input_tokens=1_000_000, output_tokens=100_000, cached_tokens=400_000)
    assert prices.cost(table["gpt-5"], usage) == pytest.approx(0.6 * 1.25 + 0.4 * 0.125 + 0.1 * 10)
    assert prices.cost(None, usage) is None


def test_a_runs_caps_are_its_agents_else_its_pools_else_the_top_levels_and_the_first_reached_says_why():
    caps = Budgets(run_usd=2.0, run_calls=50, agents={"codex": Budget(run_usd=5.0)},
                   pools={"cheap": Budget(run_usd=1.0, run_tokens=1000)})
    assert caps.for_run("codex", "cheap") == Budget(run_usd=5.0, run_tokens=1000, run_calls=50)
    assert caps.for_run("claude", "claude") == Budget(run_usd=2.0, run_calls=50)
    used = ModelUsage("", calls=31, input_tokens=900, output_tokens=100, cost_usd=2.04)
    assert budgets.reached(caps.for_run("claude", "claude"), used) == (
        "budget of $2.00 reached after 31 model calls, $2.04 spent (1,000 tokens)")
    assert budgets.reached(caps.for_run("codex", "cheap"), used).startswith("budget of 1,000 tokens reached")
    assert budgets.reached(Budget(run_calls=32), used) == ""
    unknown = replace(used, cost_usd=None)
    assert budgets.reached(Budget(run_calls=31), unknown).endswith("31 model calls, cost unknown (1,000 tokens)")
    assert budgets.reached(Budget(run_usd=2.0), unknown, 2.04).endswith(", at least $2.04 spent (1,000 tokens)")


# The scripted model's usage, read back by the meter ---------------------------------------------

FAKE_TOKENS = Tokens(input=1200, output=80, cached=400, reasoning=30)


@pytest.fixture
async def fake():
    m = FakeModel(Script(steps=(), final="done", tokens=(FAKE_TOKENS,)), workdir="/w/repo")
    await m.start()
    yield m
    await m.close()


# (api, path, body): streamed and not, in each wire format the fake speaks
FAKE_CALLS = [
    (Api.OPENAI_RESPONSES, "/v1/responses", {"model": "gpt-5", "stream": True,
                                             "tools": [{"type": "function", "name": "exec_command"}], "input": []}),
    (Api.ANTHROPIC_MESSAGES, "/v1/messages", {"model": "claude-sonnet-4-5", "stream": True,
                                              "tools": [{"name": "Bash"}], "messages": []}),
    (Api.ANTHROPIC_MESSAGES, "/v1/messages", {"model": "claude-sonnet-4-5", "tools": [{"name": "Bash"}],
                                              "messages": []}),
    (Api.GEMINI, "/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
     {"tools": [{"functionDeclarations": [{"name": "run_shell_command"}]}], "contents": []}),
    (Api.GEMINI, "/v1beta/models/gemini-2.5-pro:generateContent",
     {"tools": [{"functionDeclarations": [{"name": "run_shell_command"}]}], "contents": []}),
    (Api.CHAT_COMPLETIONS, "/v1/chat/completions", {"model": "gpt-4o", "stream": True,
                                                    "stream_options": {"include_usage": True},
                                                    "tools": [{"type": "function", "function": {"name": "bash"}}],
                                                    "messages": []}),
]


@pytest.mark.parametrize("api, path, body", FAKE_CALLS, ids=lambda v: str(v)[:40])
async def test_the_scripted_models_usage_reads_back_as_scripted(fake, api, path, body):
    async with aiohttp.ClientSession() as session, session.post(fake.url + path, json=body) as resp:
        answer = await resp.read()
    r = read(api, answer, 64)
    [sent] = fake.sent
    assert (r.input_tokens, r.output_tokens, r.cached_tokens, r.reasoning_tokens) == (
        sent.tokens.input, sent.tokens.output, sent.tokens.cached, sent.tokens.reasoning)
    assert sent.tokens == (FAKE_TOKENS if api is not Api.ANTHROPIC_MESSAGES else replace(FAKE_TOKENS, reasoning=0))


async def test_a_streamed_chat_call_is_asked_for_its_usage_and_reports_it(fake, tmp_path):
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": '"stream": true'}],
                       "tools": [{"type": "function", "function": {"name": "bash"}}]}).encode()
    metering = Metering(Settings(data_dir=tmp_path), None, budgets.Clock())
    asked = metering.request(Api.CHAT_COMPLETIONS, body)
    assert json.loads(asked)["stream_options"] == {"include_usage": True}
    assert json.loads(asked)["messages"] == json.loads(body)["messages"]
    assert metering.request(Api.CHAT_COMPLETIONS, asked) == asked  # said once, never twice
    assert metering.request(Api.OPENAI_RESPONSES, body) == body
    async with aiohttp.ClientSession() as session:
        for sent in (body, asked):
            async with session.post(fake.url + "/v1/chat/completions", data=sent) as resp:
                reading = read(Api.CHAT_COMPLETIONS, await resp.read())
        assert reading.input_tokens == FAKE_TOKENS.input
    assert len(fake.sent) == 1  # without being asked, a stream reports no usage


async def test_the_pools_view_shows_a_spent_daily_budget(tmp_path):
    settings = Settings(data_dir=tmp_path, budgets={"pools": {"fast": {"daily_usd": 1.0}}})
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    try:
        run = await store.request_run(RunRequest(
            owner="acme", repo="widgets", number=1, is_pull=False, agent="codex", model="", pool="fast",
            review=False, task="t", trigger="comment", requested_by="bob"), trigger_key="k")
        view = {p.name: p for p in (await pools_view(settings, store)).pools}
        assert (view["fast"].daily_usd, view["fast"].spent_today_usd, view["fast"].daily_spent) == (1.0, 0.0, False)
        await store.add_usage(run.id, ModelUsage("m", 1, cost_usd=1.25), day=utc_day(time.time()), at=time.time())
        view = {p.name: p for p in (await pools_view(settings, store)).pools}
        assert (view["fast"].spent_today_usd, view["fast"].daily_spent) == (1.25, True)
    finally:
        await store.close()


def test_only_a_posted_call_answered_by_the_model_counts():
    grant = Grant(1, "local", "", "acme/widgets", "local")
    assert model_call(Call(grant, Api.OLLAMA, "POST", "/api/chat", 200))
    assert model_call(Call(grant, Api.ANTHROPIC_MESSAGES, "POST", "/v1/messages", 200))
    assert not model_call(Call(grant, Api.OLLAMA, "GET", "/api/tags", 200))  # a probe
    assert not model_call(Call(grant, Api.OLLAMA, "POST", "/api/show", 200))
    assert not model_call(Call(grant, Api.OLLAMA, "HEAD", "/api/hello", 200))  # claude's
    assert not model_call(Call(grant, Api.ANTHROPIC_MESSAGES, "POST", "/v1/messages", 429))


def test_a_misspelt_cap_or_price_is_refused_with_its_name():
    with pytest.raises(ValueError, match="run_usdd"):
        Settings(budgets={"agents": {"codex": {"run_usdd": 2.0}}})
    with pytest.raises(ValueError, match="cached"):
        Settings(prices={"gpt-5": {"input": 1.25, "output": 10.0}})
    with pytest.raises(ValueError, match="greater than 0"):
        Settings(budgets={"run_calls": 0})


@dataclass
class Metered:
    """The gateway's own handler in front of one upstream, for one running claude run, metered into a
    real store."""

    url: str  # the run's messages URL on the gateway
    store: SqliteStore
    run_id: int
    metering: Metering


@contextlib.asynccontextmanager
async def metered_gateway(tmp_path, upstream: str, **settings):
    settings = Settings(data_dir=tmp_path, base_urls={"claude": upstream}, **settings)
    store = await SqliteStore.open(tmp_path / "db.sqlite3")
    run = await store.request_run(RunRequest(
        owner="acme", repo="widgets", number=1, is_pull=False, agent="claude", model="", pool="claude",
        review=False, task="t", trigger="comment", requested_by="bob"), trigger_key="k")
    for state in ("preparing", "running"):
        run = await store.transition(run.id, state)
    grants = Grants(b"k" * 32, store)
    metering = Metering(settings, store, budgets.Clock())
    proxy = ModelProxy(settings, grants, metering, lambda run_id, reason: None)
    runner, url = await serve(proxy.app())
    try:
        yield Metered(f"{url}/claude/{grants.token(run, 'agent')}/v1/messages", store, run.id, metering)
    finally:
        await runner.cleanup()
        await proxy.close()
        await metering.close()
        await store.close()


async def test_the_gateway_refuses_the_call_after_the_one_that_reached_the_budget_and_ends_the_run(tmp_path, fake,
                                                                                                  monkeypatch):
    """Through the gateway's own handler, with a real store: the refusal is a 400 the CLIs show and
    do not retry, and the run is failed with the reason in the same moment."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    body = {"model": "claude-sonnet-4-5", "stream": True, "tools": [{"name": "Bash"}], "messages": []}
    async with metered_gateway(tmp_path, fake.url, budgets={"run_calls": 2}) as gw, aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(gw.url, json=body, headers={"x-api-key": "token"}) as answer:
                assert answer.status == 200
                await answer.read()
        async with session.post(gw.url, json=body, headers={"x-api-key": "token"}) as refused:
            assert refused.status == 400 and refused.headers["x-should-retry"] == "false"
            message = (await refused.json())["error"]["message"]
        assert message.startswith("dispatchbot gateway: budget of 2 model calls reached after 2 model calls")
        assert len(fake.sent) == 2
        ended = await gw.store.get(gw.run_id)
        assert ended.state == "failed" and ended.reason == message.removeprefix("dispatchbot gateway: ")
        await gw.metering.close()
        assert (await gw.store.usage(gw.run_id)).total.calls == 2


async def test_a_compressed_answer_is_metered_all_the_same(tmp_path, fake, monkeypatch):
    """The vendors gzip a JSON answer for a client that accepts it, and every CLI says it does (an
    agent may say so on purpose): read compressed, its usage would go unseen and no budget would
    ever be reached. The gateway asks for the answer as it is, and decodes one compressed anyway."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    answer = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                         "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                         "usage": {"input_tokens": 700, "output_tokens": 7}}).encode()

    async def compressing_anyway(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(answer), content_type="application/json",
                            headers={"Content-Encoding": "gzip"})

    runner, stubborn = await model_api(compressing_anyway)
    body = {"model": "claude-sonnet-4-5", "tools": [{"name": "Bash"}], "messages": []}
    try:
        for upstream, tokens in ((fake.url, FAKE_TOKENS.input), (stubborn, 700)):
            async with metered_gateway(tmp_path / str(tokens), upstream) as gw, \
                    aiohttp.ClientSession(auto_decompress=False) as session:
                async with session.post(gw.url, json=body, headers={"x-api-key": "token",
                                                                    "Accept-Encoding": "gzip, deflate, br"}) as got:
                    status, headers, raw = got.status, got.headers, await got.read()
                await gw.metering.close()
                used = (await gw.store.usage(gw.run_id)).total
                assert (status, used.calls, used.input_tokens) == (200, 1, tokens)
                assert "Content-Encoding" not in headers and json.loads(raw)["type"] == "message"  # read as it is
        assert "gzip" not in fake.requests[-1].headers.get("Accept-Encoding", "")
    finally:
        await runner.cleanup()


async def test_an_answer_the_upstream_breaks_off_reaches_the_cli_broken_not_short(tmp_path, monkeypatch):
    """A stream cut in the middle must not look complete to the CLI (it would take half an answer
    for the whole); what it reported so far is still counted."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    start = sse(("message_start", {"type": "message_start", "message": {
        "model": "claude-sonnet-4-5", "usage": {"input_tokens": 900, "output_tokens": 1}}}))

    async def breaking_off(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(start)
        request.transport.close()  # no last chunk: the answer is broken
        return response

    runner, upstream = await model_api(breaking_off)
    try:
        async with metered_gateway(tmp_path, upstream) as gw, aiohttp.ClientSession() as session:
            async with session.post(gw.url, json={"stream": True}, headers={"x-api-key": "token"}) as got:
                assert got.status == 200
                assert await got.content.readuntil(b"\n\n") == start.split(b"\n\n")[0] + b"\n\n"
                with pytest.raises(aiohttp.ClientPayloadError):
                    await got.read()
            await gw.metering.close()
            used = (await gw.store.usage(gw.run_id)).total
            assert (used.calls, used.input_tokens) == (1, 900)
    finally:
        await runner.cleanup()
