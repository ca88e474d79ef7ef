"""What one hostile agent may hold of the bot's file descriptors through the gateway's two
listeners, each descriptor shared with every repository's Forge, store and Docker calls.

Both listeners together hold at most ``gateway.connections`` sockets. Past it, the one that has
waited longest for a request head is dropped for the new one (a real client sends its head at once;
one kept alive between its calls waits too, and its CLI opens another), or the new one is closed at
once when none waits. A head must come within ``head_timeout``. One run holds at most
``run_connections`` of them past their heads: tunnels, proxied requests and model calls, in flight
or waiting their turn.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

from bot.settings import Gateway as GatewaySettings


class Sockets:
    def __init__(self, limits: GatewaySettings) -> None:
        self.most = limits.connections
        self.run_most = limits.run_connections
        self.held: set[asyncio.BaseTransport] = set()
        self.waiting: dict[asyncio.BaseTransport, None] = {}  # those waiting for a head, longest first
        self.runs: Counter[int] = Counter()  # each run's connections past their head (none kept at 0)

    def admit(self, transport: asyncio.BaseTransport) -> bool:
        """Count a new connection, waiting for its head; False when every place is held past its head
        (the new one is then closed without a byte: a client sees a refused connection and may retry)."""
        if len(self.held) >= self.most:
            if not self.waiting:
                transport.abort()
                return False
            oldest = next(iter(self.waiting))
            self.gone(oldest)
            oldest.abort()
        self.held.add(transport)
        self.waiting[transport] = None
        return True

    def headed(self, transport: asyncio.BaseTransport | None) -> None:
        self.waiting.pop(transport, None)  # type: ignore[arg-type]

    def idle(self, transport: asyncio.BaseTransport | None) -> None:
        """Kept alive after an answer: waiting for its next head, the latest to."""
        if transport in self.held:
            self.waiting.pop(transport, None)
            self.waiting[transport] = None

    def gone(self, transport: asyncio.BaseTransport) -> None:
        self.held.discard(transport)
        self.waiting.pop(transport, None)

    @contextlib.contextmanager
    def of_run(self, run_id: int) -> Iterator[bool]:
        """True, the connection counted as the run's till the block ends, when the run has a place left."""
        if self.runs[run_id] >= self.run_most:
            yield False
            return
        self.runs[run_id] += 1
        try:
            yield True
        finally:
            self.runs[run_id] -= 1
            if not self.runs[run_id]:
                del self.runs[run_id]

    def protocol(self, inner: asyncio.Protocol) -> asyncio.Protocol:
        """``inner`` (an aiohttp connection, which has no cap of its own), counted from its start to its loss."""
        return _Counted(inner, self)


class _Counted(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol, sockets: Sockets) -> None:
        self.inner = inner
        self.sockets = sockets
        self.transport: asyncio.BaseTransport | None = None  # once admitted

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.sockets.admit(transport):
            self.transport = transport
            self.inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.sockets.gone(self.transport)
            self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()
