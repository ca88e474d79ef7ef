"""The gateway's proxy: ``CONNECT host:port`` tunnels and plain ``GET http://host/...`` requests,
to the hosts of a run's allowlist only, for containers that reach nothing else.

A container authenticates with its run token as the proxy password (``HTTPS_PROXY=http://run:
TOKEN@gateway:port``). Every refused connection is counted per run and destination, for the status
comment; nothing else about the traffic is looked at (tunnels stay end-to-end TLS).

Its connections are counted with the model listener's (``sockets``: a cap on all of them, a
head within ``head_timeout``, a cap per run); a tunnel that passes no byte either way for
``tunnel_idle_timeout`` is closed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from bot.gateway.grants import Grants, Holder
from bot.gateway.sockets import Sockets
from bot.settings import Gateway as GatewaySettings

log = logging.getLogger(__name__)

HEAD_LIMIT = 64 * 1024
_NOT_PASSED = ("proxy-authorization", "proxy-connection", "connection", "host")
CHUNK = 256 * 1024
# Destinations kept apart in a run's record: an agent may name endless hosts, and the record lives
# in the store and the API's run view. The refusals past them are counted together, as ELSEWHERE
# (a name no destination has: a connection's has a colon, a call's a space).
BLOCKED_KEPT = 100
ELSEWHERE = "elsewhere"


def add_refused(blocked: dict[str, int], destination: str, count: int = 1) -> None:
    """``count`` refusals of ``destination`` in a run's tally, or under ELSEWHERE once it is full."""
    if destination not in blocked and len(blocked) >= BLOCKED_KEPT:
        destination = ELSEWHERE
    blocked[destination] = blocked.get(destination, 0) + count


def allowed(allowlist: list[str], host: str, port: int) -> bool:
    """``host`` (ports 80 and 443), ``host:port``, ``.domain`` (its subdomains, same ports)."""
    host = host.lower().rstrip(".")
    for entry in allowlist:
        name, _, only = entry.lower().rpartition(":") if entry.count(":") == 1 else (entry.lower(), "", "")
        if (int(only) != port) if only else port not in (80, 443):
            continue
        if host == name or (name.startswith(".") and host.endswith(name)):
            return True
    return False


def _answer(status: str, text: str = "", extra: str = "") -> bytes:
    body = f"dispatchbot gateway: {text}\n".encode() if text else b""
    return (f"HTTP/1.1 {status}\r\n{extra}Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode() + body


class Proxy:
    def __init__(self, grants: Grants, allowlist: Callable[[Holder], list[str]], limits: GatewaySettings,
                 refused: Callable[[], None] = lambda: None, sockets: Sockets | None = None) -> None:
        self.grants = grants
        self.allowlist = allowlist
        self.limits = limits
        self.refused = refused  # told after each refusal, to keep the counts where a restart finds them
        self.blocked: dict[int, dict[str, int]] = {}  # counted since last taken
        self.sockets = sockets or Sockets(limits)  # shared with the model listener in the gateway

    async def serve(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._client, host, port, limit=HEAD_LIMIT)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection, counted in ``sockets`` from here to its end on every path."""
        if not self.sockets.admit(writer.transport):
            return
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        finally:
            self.sockets.gone(writer.transport)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(self.limits.head_timeout):
            head = await reader.readuntil(b"\r\n\r\n")
        self.sockets.headed(writer.transport)
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, _version = request_line.split(" ", 2)
        headers = [line.split(":", 1) for line in header_lines if ":" in line]
        holder = await self._holder(dict((k.strip().lower(), v.strip()) for k, v in headers))
        if holder is None:
            writer.write(_answer("407 Proxy Authentication Required", "a live run token is needed as the proxy password",
                                 'Proxy-Authenticate: Basic realm="dispatchbot"\r\n'))
            return
        with self.sockets.of_run(holder.grant.run_id) as placed:
            if placed:
                await self._serve(holder, method, target, headers, reader, writer)
            else:
                log.info("run %s: refused a connection past its %d open through the gateway",
                         holder.grant.run_id, self.sockets.run_most)
                writer.write(_answer("429 Too Many Requests", f"this run has {self.sockets.run_most} connections "
                                     "open through the gateway, its most at once"))

    async def _serve(self, holder: Holder, method: str, target: str, headers: list[list[str]],
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if method == "CONNECT":
            host, _, port_text = target.rpartition(":")
            host, port = host.strip("[]"), int(port_text)
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                writer.write(_answer("400 Bad Request", "only CONNECT and absolute http:// requests are proxied"))
                return
            host, port = url.hostname, url.port or 80
        if not allowed(self.allowlist(holder), host, port):
            destination = f"{host}:{port}"
            log.info("run %s: refused a connection to %s", holder.grant.run_id, destination)
            self.count_refused(holder.grant.run_id, destination)
            writer.write(_answer("403 Forbidden", f"{destination} is not on this run's allowlist"))
            return
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except (OSError, TimeoutError) as e:
            writer.write(_answer("502 Bad Gateway", f"cannot connect to {host}:{port}: {e}"))
            return
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:  # origin-form, one request per connection, without what was meant for the proxy, and
                # for the host checked: another Host would have a shared front (a CDN) serve another site
                path = urlsplit(target)._replace(scheme="", netloc="").geturl() or "/"
                kept = [f"{k}:{v}" for k, v in headers if k.strip().lower() not in _NOT_PASSED]
                name = f"[{host}]" if ":" in host else host  # an IPv6 address
                authority = name if port == 80 else f"{name}:{port}"
                up_writer.write("\r\n".join([f"{method} {path} HTTP/1.1", f"Host: {authority}", *kept,
                                              "Connection: close", "", ""]).encode("latin-1"))
            await _pipe_both(reader, writer, up_reader, up_writer, self.limits.tunnel_idle_timeout)
        finally:
            up_writer.close()

    async def _holder(self, headers: dict[str, str]) -> Holder | None:
        scheme, _, value = headers.get("proxy-authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            _user, _, token = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return await self.grants.check(token)

    def count_refused(self, run_id: int, destination: str) -> None:
        """One refusal for the run's record: a connection of the proxy's, or a call of the model
        gateway's (``POST /v1/batches (openai API)``)."""
        add_refused(self.blocked.setdefault(run_id, {}), destination)
        self.refused()

    def take_blocked(self, run_id: int) -> dict[str, int]:
        """The refused destinations of a run since last taken (and forget them: the run's record keeps them)."""
        return self.blocked.pop(run_id, {})


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, deadline: asyncio.Timeout,
                idle: float) -> None:
    try:
        while chunk := await reader.read(CHUNK):
            deadline.reschedule(asyncio.get_running_loop().time() + idle)
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _pipe_both(a_reader: asyncio.StreamReader, a_writer: asyncio.StreamWriter,
                     b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter, idle: float) -> None:
    """Both ways until both are done, or TimeoutError once no byte has passed either way for
    ``idle`` seconds: a silent tunnel would hold its two descriptors for ever."""
    async with asyncio.timeout(idle) as deadline:
        await asyncio.gather(_pipe(a_reader, b_writer, deadline, idle), _pipe(b_reader, a_writer, deadline, idle))


