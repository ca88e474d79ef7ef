"""What a model's answer reports, in each wire format the gateway forwards (``bot.gateway.observer.Api``):
its model, its tokens and its tool calls. One ``Handler`` per format says which frames it wants
(judged on their bytes alone, in place) and reads them; ``bot.usage.reader`` cuts an answer into
frames as it streams past and hands them over.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bot.gateway.observer import Api

HEAD = 512  # bytes of a frame that tell whether it is wanted


@dataclass
class Reading:
    """What one answer reported; counts the vendor did not send stay 0."""

    model: str = ""
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0  # reasoning tokens included
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    tools: list[tuple[str, Any]] = field(default_factory=list)  # (tool name, its arguments) in order


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _json(text: Any) -> Any:
    """A tool's arguments sent as a JSON string; the string itself when it is not JSON."""
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


class Handler:
    """One wire format: which frames it wants, and what it reads from them."""

    def __init__(self) -> None:
        self.reading = Reading()

    WANTED: tuple[bytes, ...] = ()  # what a wanted frame holds somewhere
    HEAD_ONLY = False  # ... in its first ``HEAD`` bytes (where its type is)
    TAILS = False  # a frame not wanted has something to read in its last bytes

    def wanted(self, buf: bytearray, start: int, end: int) -> bool:
        """Whether the frame ``buf[start:end]`` (a whole one, or the head of a long one) is to be
        parsed: looked for in place, never copied."""
        if self.HEAD_ONLY:
            end = min(end, start + HEAD)
        return any(buf.find(w, start, end) >= 0 for w in self.WANTED)

    def frame(self, data: dict[str, Any]) -> None:
        """A streamed event (SSE data or an NDJSON line)."""

    def whole(self, body: Any) -> None:
        """The answer as one JSON body (a call that did not stream)."""

    def skipped(self, tail: bytes) -> None:
        """The last bytes of a frame that was not wanted (with ``TAILS``)."""

    def done(self) -> None:
        """The answer ended: what is still pending is read."""


class Responses(Handler):
    """OpenAI's Responses API: ``response.completed`` (or ``incomplete``, ``failed``) carries the
    usage; each ``response.output_item.done`` one output item, a tool call among them."""

    WANTED = (b"response.completed", b"response.incomplete", b"response.failed", b"response.output_item.done")
    HEAD_ONLY = True

    def frame(self, data: dict[str, Any]) -> None:
        kind = data.get("type", "")
        if kind == "response.output_item.done":
            self._item(data.get("item") or {})
        elif kind in ("response.completed", "response.incomplete", "response.failed"):
            self._response(data.get("response") or {}, items=False)

    def whole(self, body: Any) -> None:
        if isinstance(body, dict):
            self._response(body, items=True)

    def _response(self, response: dict[str, Any], *, items: bool) -> None:
        r = self.reading
        r.model = response.get("model") or r.model
        usage = response.get("usage") or {}
        r.input_tokens = _int(usage.get("input_tokens"))
        r.output_tokens = _int(usage.get("output_tokens"))
        r.cached_tokens = _int((usage.get("input_tokens_details") or {}).get("cached_tokens"))
        r.reasoning_tokens = _int((usage.get("output_tokens_details") or {}).get("reasoning_tokens"))
        if items:
            for item in response.get("output") or []:
                self._item(item)

    def _item(self, item: dict[str, Any]) -> None:
        kind = item.get("type")
        if kind == "function_call":
            self.reading.tools.append((item.get("name", ""), _json(item.get("arguments"))))
        elif kind == "custom_tool_call":  # codex's freeform apply_patch: the patch as plain text
            self.reading.tools.append((item.get("name", ""), item.get("input", "")))
        elif kind == "local_shell_call":
            self.reading.tools.append(("local_shell", (item.get("action") or {}).get("command")))


class Chat(Handler):
    """Chat Completions: a stream of ``chat.completion.chunk``; tool calls come in pieces by index,
    the usage in a last chunk (asked for with ``stream_options.include_usage``)."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[int, list[Any]] = {}  # index -> [name, argument pieces...]

    WANTED = (b'"tool_calls"', b'"usage":{', b'"usage": {')

    def frame(self, data: dict[str, Any]) -> None:
        self._usage(data)
        for choice in data.get("choices") or []:
            for call in (choice.get("delta") or {}).get("tool_calls") or []:
                function = call.get("function") or {}
                pieces = self._calls.setdefault(_int(call.get("index")), [""])
                pieces[0] = pieces[0] or function.get("name") or ""
                pieces.append(function.get("arguments") or "")

    def whole(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        self._usage(body)
        for choice in body.get("choices") or []:
            for call in (choice.get("message") or {}).get("tool_calls") or []:
                function = call.get("function") or {}
                self.reading.tools.append((function.get("name", ""), _json(function.get("arguments"))))

    def _usage(self, data: dict[str, Any]) -> None:
        r = self.reading
        r.model = data.get("model") or r.model
        usage = data.get("usage")
        if usage:
            r.input_tokens = _int(usage.get("prompt_tokens"))
            r.output_tokens = _int(usage.get("completion_tokens"))
            r.cached_tokens = _int((usage.get("prompt_tokens_details") or {}).get("cached_tokens"))
            r.reasoning_tokens = _int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens"))

    def done(self) -> None:
        for _, (name, *pieces) in sorted(self._calls.items()):
            self.reading.tools.append((name, _json("".join(pieces))))


class Messages(Handler):
    """Anthropic's Messages API: ``message_start`` carries the prompt's usage (fresh, written to
    and read from the cache), ``message_delta`` the output so far; a ``tool_use`` block's input
    comes as ``input_json_delta`` pieces."""

    WANTED = (b"message_start", b"message_delta", b"content_block_start", b"content_block_stop",
              b"input_json_delta")
    HEAD_ONLY = True

    def __init__(self) -> None:
        super().__init__()
        self._blocks: dict[int, list[Any]] = {}  # index -> [name, input pieces...]

    def frame(self, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind == "message_start":
            message = data.get("message") or {}
            self.reading.model = message.get("model") or self.reading.model
            self._usage(message.get("usage") or {})
        elif kind == "message_delta":
            self._usage(data.get("usage") or {})
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._blocks[_int(data.get("index"))] = [block.get("name", "")]
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "input_json_delta" and _int(data.get("index")) in self._blocks:
                self._blocks[_int(data.get("index"))].append(delta.get("partial_json") or "")
        elif kind == "content_block_stop" and _int(data.get("index")) in self._blocks:
            name, *pieces = self._blocks.pop(_int(data.get("index")))
            self.reading.tools.append((name, _json("".join(pieces) or "{}")))

    def whole(self, body: Any) -> None:
        if not isinstance(body, dict):
            return
        self.reading.model = body.get("model") or self.reading.model
        self._usage(body.get("usage") or {})
        for block in body.get("content") or []:
            if block.get("type") == "tool_use":
                self.reading.tools.append((block.get("name", ""), block.get("input")))

    def _usage(self, usage: dict[str, Any]) -> None:
        """Anthropic counts the prompt in three parts; a later event's counts replace earlier ones."""
        r = self.reading
        if "input_tokens" in usage or "cache_read_input_tokens" in usage:
            r.cached_tokens = _int(usage.get("cache_read_input_tokens"))
            r.input_tokens = (_int(usage.get("input_tokens")) + _int(usage.get("cache_creation_input_tokens"))
                              + r.cached_tokens)
        if "output_tokens" in usage:
            r.output_tokens = _int(usage.get("output_tokens"))

    def done(self) -> None:
        for name, *pieces in self._blocks.values():  # cut off before its block ended
            self.reading.tools.append((name, _json("".join(pieces) or "{}")))


class Gemini(Handler):
    """Gemini: every streamed chunk is a whole ``GenerateContentResponse``; its ``usageMetadata``
    is the answer's so far (the last one counts), thoughts billed as output."""

    WANTED = (b'"functionCall"',)  # any other chunk is read from its tail: usage, model version
    TAILS = True

    def frame(self, data: dict[str, Any]) -> None:
        r = self.reading
        r.model = data.get("modelVersion") or r.model
        if isinstance(data.get("usageMetadata"), dict):
            self._usage(data["usageMetadata"])
        for candidate in data.get("candidates") or []:
            for part in (candidate.get("content") or {}).get("parts") or []:
                call = part.get("functionCall")
                if isinstance(call, dict):
                    r.tools.append((call.get("name", ""), call.get("args")))

    def whole(self, body: Any) -> None:
        for response in body if isinstance(body, list) else [body]:
            if isinstance(response, dict):
                self.frame(response)

    def skipped(self, tail: bytes) -> None:
        """A text chunk: its usage and model version, if any, follow the text."""
        for key, read in ((b'"usageMetadata"', self._usage), (b'"modelVersion"', self._model)):
            at = tail.rfind(key)
            if at >= 0:
                value = _value_after(tail, at + len(key))
                if value is not None:
                    read(value)

    def _model(self, value: Any) -> None:
        if isinstance(value, str):
            self.reading.model = value

    def _usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        r = self.reading
        r.input_tokens = _int(usage.get("promptTokenCount"))
        r.reasoning_tokens = _int(usage.get("thoughtsTokenCount"))
        r.output_tokens = _int(usage.get("candidatesTokenCount")) + r.reasoning_tokens
        r.cached_tokens = _int(usage.get("cachedContentTokenCount"))


class Ollama(Handler):
    """ollama's own API (``/api/chat``, ``/api/generate``): lines of JSON, the last one ``done``
    with the counts; a non-streamed answer is that one line."""

    WANTED = (b'"done":true', b'"done": true', b'"tool_calls"')

    def frame(self, data: dict[str, Any]) -> None:
        r = self.reading
        r.model = data.get("model") or r.model
        for call in (data.get("message") or {}).get("tool_calls") or []:
            function = call.get("function") or {}
            r.tools.append((function.get("name", ""), function.get("arguments")))
        if data.get("done"):
            r.input_tokens = _int(data.get("prompt_eval_count"))
            r.output_tokens = _int(data.get("eval_count"))

    def whole(self, body: Any) -> None:
        if isinstance(body, dict):
            self.frame(body)


HANDLERS: dict[Api, type[Handler]] = {
    Api.OPENAI_RESPONSES: Responses, Api.CHAT_COMPLETIONS: Chat, Api.ANTHROPIC_MESSAGES: Messages,
    Api.GEMINI: Gemini, Api.OLLAMA: Ollama,
}


def _value_after(text: bytes, at: int) -> Any:
    """The JSON value after ``"key"`` at ``at`` (its colon, then the value), or None."""
    colon = text.find(b":", at)
    if colon < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(text[colon + 1:].decode(errors="replace").lstrip())[0]
    except ValueError:
        return None
