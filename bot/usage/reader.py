"""Reading a model's answer as it streams past, frame by frame, for its format's handler (``bot.usage.wire``).

An answer is one JSON body, server-sent events (``data:`` frames split by a blank line) or ollama's
lines of JSON. A ``Reader`` is fed the answer chunk by chunk: it looks for frame ends in the new
bytes only, and parses a frame only if its handler wants it (usage, tool calls), judged on the
bytes alone. Text deltas are not parsed, and a long one is not even kept: once its first bytes
show that it is not wanted, the rest of it passes until its end, keeping only a tail (Gemini puts
its usage after a chunk's text). So the cost per chunk stays small whatever the answer's size.
"""

from __future__ import annotations

import json
import logging

from bot.gateway.observer import Api
from bot.usage.wire import HANDLERS, HEAD, Reading

log = logging.getLogger(__name__)

TAIL = 4096  # bytes kept of a frame that is not wanted
MAX_WHOLE = 16 * 1024 * 1024  # a body that does not stream is read up to this size


def _separator(buf: bytearray, sep: bytes, look: int) -> int:
    """Where the first ``sep`` (``\\n``, ``\\n\\n`` or ``\\r\\n\\r\\n``) at or after ``look`` starts, or -1.
    By its newlines: a one-byte search runs at memchr's speed, a longer one byte by byte."""
    while (at := buf.find(b"\n", look)) >= 0:
        if sep == b"\n" or (sep == b"\n\n" and buf[at + 1:at + 2] == b"\n"):
            return at
        if sep == b"\r\n\r\n" and at and buf[at - 1:at + 3] == sep:
            return at - 1
        look = at + 1
    return -1


class Reader:
    """Feeds one answer's chunks to its format's handler, frame by frame."""

    def __init__(self, api: Api) -> None:
        self.handler = HANDLERS[api]()
        self._lines = api is Api.OLLAMA
        self._mode = ""  # "sse", "lines" or "whole", from the first bytes
        self._sep = b""
        self._pending = bytearray()  # the current frame so far (or, when whole, the body)
        self._skipping = False  # the current frame is not wanted: only its tail is kept
        self._too_big = False

    @property
    def reading(self) -> Reading:
        return self.handler.reading

    def feed(self, chunk: bytes) -> None:
        if not self._mode:
            start = chunk.lstrip()
            if not start:
                return
            whole = start[:1] in (b"{", b"[")
            self._mode = "lines" if self._lines else ("whole" if whole else "sse")
            self._sep = b"\n" if self._mode == "lines" else b""  # SSE: told by its first line's end
        if self._mode == "whole":
            if len(self._pending) + len(chunk) > MAX_WHOLE:
                self._too_big = True
                self._pending.clear()
            elif not self._too_big:
                self._pending += chunk
            return
        self._frames(chunk)

    def _frames(self, chunk: bytes) -> None:
        """Each frame that ends in ``chunk`` handled, the rest kept: a separator is looked for in the
        new bytes only (and the few before them it may start in)."""
        pending = self._pending
        if not self._sep:  # Google ends SSE lines with CRLF, others with LF
            first = chunk.find(b"\n")
            if first < 0:
                pending += chunk
                return
            self._sep = b"\r\n\r\n" if (chunk[first - 1:first] if first else pending[-1:]) == b"\r" else b"\n\n"
        sep = self._sep
        look = max(0, len(pending) - len(sep) + 1)
        pending += chunk
        start = 0
        while (end := _separator(pending, sep, look)) >= 0:
            self._end(pending, start, end)
            start = look = end + len(sep)
        del pending[:start]
        if not self._skipping and len(pending) > HEAD and not self.handler.wanted(pending, 0, HEAD):
            self._skipping = True  # a long frame it does not want: only its tail is kept
        if self._skipping and len(pending) > 2 * TAIL:
            del pending[:-TAIL]

    def _end(self, buf: bytearray, start: int, end: int) -> None:
        """The frame ``buf[start:end]`` ended: parsed if wanted, else its tail read if its handler reads tails."""
        skipping, self._skipping = self._skipping, False
        if not skipping and self.handler.wanted(buf, start, end):
            self._parse(buf[start:end])
        elif self.handler.TAILS:
            self.handler.skipped(bytes(buf[max(start, end - TAIL):end]))

    def _parse(self, frame: bytearray) -> None:
        if self._mode == "sse":
            data = b"".join(line[5:].lstrip() for line in frame.splitlines() if line.startswith(b"data:"))
            if not data or data == b"[DONE]":
                return
        else:
            data = frame
        try:
            parsed = json.loads(data)
        except ValueError:
            return
        if isinstance(parsed, dict):
            self.handler.frame(parsed)

    def finish(self) -> Reading:
        """What the answer reported, once it ended (or was cut off)."""
        if self._mode == "whole":
            if self._too_big:
                log.warning("an answer over %d bytes that did not stream: its usage was not read", MAX_WHOLE)
            elif self._pending:
                try:
                    self.handler.whole(json.loads(bytes(self._pending)))
                except ValueError:
                    pass
        elif self._pending.strip():  # the last frame, with no blank line after it
            self._end(self._pending, 0, len(self._pending))
        self.handler.done()
        return self.handler.reading
