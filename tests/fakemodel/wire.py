"""The wire formats the CLIs speak: reading a request's history and tools, writing one turn back.

Each format answers with either one tool call or one text message, streamed as server-sent events
the way the vendor's API streams them (event names and shapes per REAL-CLIS.md and the vendors'
documentation), reports the turn's usage (``Tokens``) in the vendor's own fields, and knows its
vendor's 401 body. ``sent`` says what usage an answer reported, as the vendor counts it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from .script import Tokens


def _sse(event: str | None, data: dict[str, Any] | str) -> str:
    payload = data if isinstance(data, str) else json.dumps(data)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class Responses:
    """OpenAI's Responses API (codex, local): ``POST /v1/responses``."""

    @staticmethod
    def schema(body: dict[str, Any]) -> dict[str, Any] | None:
        fmt = (body.get("text") or {}).get("format") or {}
        return fmt.get("schema") if fmt.get("type") == "json_schema" else None

    unauthorized = {"error": {"message": "Incorrect API key provided: fake-***. You can find your API key at "
                              "https://platform.openai.com/account/api-keys.", "type": "invalid_request_error",
                              "param": None, "code": "invalid_api_key"}}

    @staticmethod
    def offered(body: dict[str, Any]) -> set[str]:
        return {t["name"] for t in body.get("tools", []) if t.get("name")}

    @staticmethod
    def answered(body: dict[str, Any]) -> int:
        return sum(1 for item in body.get("input", []) if item.get("type") == "function_call_output")

    @staticmethod
    def sent(body: dict[str, Any], tokens: Tokens) -> Tokens | None:
        return tokens

    @staticmethod
    def usage(tokens: Tokens) -> dict[str, Any]:
        return {"input_tokens": tokens.input, "input_tokens_details": {"cached_tokens": tokens.cached},
                "output_tokens": tokens.output, "output_tokens_details": {"reasoning_tokens": tokens.reasoning},
                "total_tokens": tokens.input + tokens.output}

    @classmethod
    def turn(cls, body: dict[str, Any], tool: tuple[str, dict[str, Any]] | None, text: str, tokens: Tokens) -> str:
        rid = _id("resp")
        events = [_sse("response.created", {"type": "response.created", "response": {"id": rid}})]
        if tool:
            item = {"type": "function_call", "id": _id("fc"), "call_id": _id("call"), "name": tool[0],
                    "arguments": json.dumps(tool[1]), "status": "completed"}
        else:
            item = {"type": "message", "id": _id("msg"), "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}]}
        events.append(_sse("response.output_item.added", {"type": "response.output_item.added",
                                                          "output_index": 0, "item": item}))
        if not tool:
            events.append(_sse("response.output_text.delta", {"type": "response.output_text.delta",
                                                              "item_id": item["id"], "output_index": 0,
                                                              "content_index": 0, "delta": text}))
        events.append(_sse("response.output_item.done", {"type": "response.output_item.done",
                                                         "output_index": 0, "item": item}))
        events.append(_sse("response.completed", {"type": "response.completed", "response": {
            "id": rid, "object": "response", "status": "completed", "model": body.get("model", "fake"),
            "usage": cls.usage(tokens), "output": [item]}}))
        return "".join(events)


class Messages:
    """Anthropic's Messages API (claude, opencode): ``POST /v1/messages``."""

    @staticmethod
    def schema(body: dict[str, Any]) -> dict[str, Any] | None:
        fmt = body.get("output_format") or (body.get("output_config") or {}).get("format") or {}
        return fmt.get("schema") if fmt.get("type") == "json_schema" else None

    unauthorized = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}

    @staticmethod
    def offered(body: dict[str, Any]) -> set[str]:
        return {t["name"] for t in body.get("tools", []) if t.get("name")}

    @staticmethod
    def answered(body: dict[str, Any]) -> int:
        return sum(
            1
            for message in body.get("messages", [])
            if isinstance(message.get("content"), list)
            for block in message["content"]
            if block.get("type") == "tool_result"
        )

    @staticmethod
    def sent(body: dict[str, Any], tokens: Tokens) -> Tokens | None:
        return Tokens(tokens.input, tokens.output, tokens.cached, 0)

    @staticmethod
    def usage(tokens: Tokens, output: int) -> dict[str, Any]:
        """The prompt in Anthropic's three parts: fresh, written to the cache (none here), read from it."""
        return {"input_tokens": tokens.input - tokens.cached, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": tokens.cached, "output_tokens": output}

    @classmethod
    def message(cls, body: dict[str, Any], tool: tuple[str, dict[str, Any]] | None, text: str,
                tokens: Tokens) -> dict[str, Any]:
        """The whole message, for a request that does not stream."""
        content: dict[str, Any] = (
            {"type": "tool_use", "id": _id("toolu"), "name": tool[0], "input": tool[1]} if tool
            else {"type": "text", "text": text}
        )
        return {"id": _id("msg"), "type": "message", "role": "assistant", "model": body.get("model", "fake"),
                "content": [content], "stop_reason": "tool_use" if tool else "end_turn", "stop_sequence": None,
                "usage": cls.usage(tokens, tokens.output)}

    @classmethod
    def turn(cls, body: dict[str, Any], tool: tuple[str, dict[str, Any]] | None, text: str, tokens: Tokens) -> str:
        whole = cls.message(body, tool, text, tokens)
        block = whole["content"][0]
        start = {**whole, "content": [], "stop_reason": None, "usage": cls.usage(tokens, 1)}
        if tool:
            opening = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(tool[1])}
        else:
            opening = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": text}
        return "".join([
            _sse("message_start", {"type": "message_start", "message": start}),
            _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": opening}),
            _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}),
            _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None},
                                   "usage": {"output_tokens": tokens.output}}),
            _sse("message_stop", {"type": "message_stop"}),
        ])


class Gemini:
    """Google's Gemini API (gemini): ``POST /v1beta/models/<model>:streamGenerateContent?alt=sse``."""

    @staticmethod
    def schema(body: dict[str, Any]) -> dict[str, Any] | None:
        config = body.get("generationConfig") or {}
        return config.get("responseJsonSchema") or config.get("responseSchema")

    unauthorized = {"error": {"code": 401, "message": "API key not valid. Please pass a valid API key.",
                              "status": "UNAUTHENTICATED"}}

    @staticmethod
    def offered(body: dict[str, Any]) -> set[str]:
        return {d["name"] for t in body.get("tools", []) for d in t.get("functionDeclarations", [])}

    @staticmethod
    def answered(body: dict[str, Any]) -> int:
        return sum(1 for c in body.get("contents", []) for p in c.get("parts", []) if "functionResponse" in p)

    @staticmethod
    def sent(body: dict[str, Any], tokens: Tokens) -> Tokens | None:
        return tokens

    @staticmethod
    def response(tool: tuple[str, dict[str, Any]] | None, text: str, tokens: Tokens, model: str) -> dict[str, Any]:
        """Thoughts are counted apart from the candidates (the answer's output is both)."""
        part = {"functionCall": {"name": tool[0], "args": tool[1]}} if tool else {"text": text}
        usage = {"promptTokenCount": tokens.input, "candidatesTokenCount": tokens.output - tokens.reasoning,
                 "totalTokenCount": tokens.input + tokens.output}
        if tokens.cached:
            usage["cachedContentTokenCount"] = tokens.cached
        if tokens.reasoning:
            usage["thoughtsTokenCount"] = tokens.reasoning
        return {"candidates": [{"content": {"role": "model", "parts": [part]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": usage, "modelVersion": model, "responseId": _id("r")}

    @classmethod
    def turn(cls, body: dict[str, Any], tool: tuple[str, dict[str, Any]] | None, text: str, tokens: Tokens,
             model: str = "fake") -> str:
        """Streamed in two chunks as Gemini does, the first with the prompt's count only (CRLF-ended)."""
        first = {"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "index": 0}],
                 "usageMetadata": {"promptTokenCount": tokens.input, "totalTokenCount": tokens.input},
                 "modelVersion": model}
        return (_sse(None, first) + _sse(None, cls.response(tool, text, tokens, model))).replace("\n", "\r\n")


class Chat:
    """OpenAI's Chat Completions API (OpenAI-compatible servers): ``POST /v1/chat/completions``."""

    @staticmethod
    def schema(body: dict[str, Any]) -> dict[str, Any] | None:
        fmt = body.get("response_format") or {}
        return (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None

    unauthorized = Responses.unauthorized

    @staticmethod
    def offered(body: dict[str, Any]) -> set[str]:
        return {t["function"]["name"] for t in body.get("tools", []) if "function" in t}

    @staticmethod
    def answered(body: dict[str, Any]) -> int:
        return sum(1 for m in body.get("messages", []) if m.get("role") == "tool")

    @staticmethod
    def sent(body: dict[str, Any], tokens: Tokens) -> Tokens | None:
        """A stream reports its usage only when the request asked for it."""
        asked = not body.get("stream") or (body.get("stream_options") or {}).get("include_usage")
        return tokens if asked else None

    @staticmethod
    def usage(tokens: Tokens) -> dict[str, Any]:
        return {"prompt_tokens": tokens.input, "completion_tokens": tokens.output,
                "total_tokens": tokens.input + tokens.output, "prompt_tokens_details": {"cached_tokens": tokens.cached},
                "completion_tokens_details": {"reasoning_tokens": tokens.reasoning}}

    @classmethod
    def turn(cls, body: dict[str, Any], tool: tuple[str, dict[str, Any]] | None, text: str, tokens: Tokens) -> str:
        cid = _id("chatcmpl")

        asked = cls.sent(body, tokens) is not None  # then every other chunk says "usage": null

        def chunk(delta: dict[str, Any], finish: str | None) -> str:
            return _sse(None, {"id": cid, "object": "chat.completion.chunk", "model": body.get("model", "fake"),
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
                        | ({"usage": None} if asked else {}))

        if tool:
            call = {"index": 0, "id": _id("call"), "type": "function",
                    "function": {"name": tool[0], "arguments": json.dumps(tool[1])}}
            body_chunk, finish = chunk({"role": "assistant", "tool_calls": [call]}, None), "tool_calls"
        else:
            body_chunk, finish = chunk({"role": "assistant", "content": text}, None), "stop"
        usage = _sse(None, {"id": cid, "object": "chat.completion.chunk", "model": body.get("model", "fake"),
                            "choices": [], "usage": cls.usage(tokens)}) if asked else ""
        return body_chunk + chunk({}, finish) + usage + _sse(None, "[DONE]")
