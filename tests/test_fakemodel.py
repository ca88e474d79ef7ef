"""The fake model server on its own: each wire format plays the script turn by turn (the real CLIs
drive it in test_real_agents.py)."""

import json

import aiohttp
import pytest

from tests.fakemodel import FakeModel, hello


@pytest.fixture
async def model():
    m = FakeModel(hello("HELLO.md"), workdir="/w/repo")
    await m.start()
    yield m
    await m.close()


def events(text: str) -> list[dict]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


async def post(model: FakeModel, path: str, body: dict) -> tuple[int, str, dict]:
    async with aiohttp.ClientSession() as session, session.post(model.url + path, json=body) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def test_responses_turns_run_the_shell_then_say_the_final_message(model):
    tools = [{"type": "function", "name": "exec_command"}, {"type": "web_search"}]
    done = {"type": "function_call_output", "call_id": "c", "output": ""}
    turns = []
    for answered in range(3):
        status, text, _ = await post(model, "/v1/responses", {"tools": tools, "input": [done] * answered})
        assert status == 200
        [item] = [e["item"] for e in events(text) if e["type"] == "response.output_item.done"]
        call = item["type"] == "function_call"
        turns.append(json.loads(item["arguments"])["cmd"] if call else item["content"][0]["text"])
    assert turns == [
        "printf '%s' '# Hello\n\nWritten by the fake model.\n' > HELLO.md",
        "printf '%s' 'Edited in a second turn.\n' >> HELLO.md",
        "Created and edited HELLO.md",
    ]


async def test_messages_create_with_the_file_tool_at_an_absolute_path(model):
    body = {"stream": True, "tools": [{"name": "Write"}, {"name": "Bash"}],
            "messages": [{"role": "user", "content": "go"}]}
    _, text, _ = await post(model, "/v1/messages", body)
    [start] = [e for e in events(text) if e["type"] == "content_block_start"]
    [delta] = [e for e in events(text) if e["type"] == "content_block_delta"]
    assert start["content_block"]["name"] == "Write"
    assert json.loads(delta["delta"]["partial_json"]) == {"file_path": "/w/repo/HELLO.md",
                                                          "content": "# Hello\n\nWritten by the fake model.\n"}


async def test_a_side_request_for_structured_output_gets_a_matching_object(model):
    schema = {"type": "OBJECT", "properties": {"reasoning": {"type": "STRING"}, "score": {"type": "INTEGER"}},
              "required": ["reasoning", "score"]}
    status, text, _ = await post(model, "/v1beta/models/m:generateContent",
                                 {"contents": [], "generationConfig": {"responseJsonSchema": schema}})
    assert status == 200
    answer = json.loads(json.loads(text)["candidates"][0]["content"]["parts"][0]["text"])
    assert answer == {"reasoning": "fake", "score": 1}


async def test_unauthorized_answers_401_like_the_vendor_and_records_the_request(model):
    model.unauthorized = True
    status, text, headers = await post(model, "/v1/messages", {"messages": []})
    assert status == 401 and headers["x-should-retry"] == "false"
    assert json.loads(text)["error"]["type"] == "authentication_error"
    assert [(r.method, r.path) for r in model.requests] == [("POST", "/v1/messages")]


async def test_an_unknown_request_is_reported(model):
    status, _, _ = await post(model, "/v1/embeddings", {})
    assert status == 404 and model.errors == ["unexpected request POST /v1/embeddings"]


async def test_an_answer_in_one_json_body_is_gzipped_only_for_a_client_that_accepts_it(model):
    """As the vendors' fronts do; a stream is sent as it is."""
    got = {}
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for accept in ("gzip, deflate", "identity"):
            for stream in (False, True):
                async with session.post(model.url + "/v1/messages", json={"stream": stream, "messages": []},
                                        headers={"Accept-Encoding": accept}) as resp:
                    got[accept, stream] = resp.headers.get("Content-Encoding")
    assert got == {("gzip, deflate", False): "gzip", ("gzip, deflate", True): None,
                   ("identity", False): None, ("identity", True): None}
