"""The PostgreSQL store's connections: a pool, transactions that announce what they changed, and
retries across a lost connection.

A transaction that fails because PostgreSQL went away (a restart, a failover) or because it lost
a serialization race is run again from the start, on a fresh connection, for up to ``OUTAGE``
seconds: the store's writes are idempotent by design (trigger keys, outbox keys, transitions
checked against the current state), so one repeated after a commit whose answer was lost finds
its effect already there. Callers see PostgreSQL's restart as a slow call, not an error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from bot.store.postgres.feed import CHANNEL, LOCAL_TOPICS, ChangeFeed
from bot.store.postgres.rows import Tx

log = logging.getLogger(__name__)

T = TypeVar("T")

OUTAGE = 60.0  # seconds a call keeps trying while PostgreSQL is unreachable
POOL_SIZE = 10  # connections per store (per replica)
# What a new attempt on a new connection may cure: the server gone or starting, the connection
# dropped, or (class 40) a transaction that lost a race with another one.
RETRYABLE = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.TransactionRollbackError,
)


async def keep_session(_db: asyncpg.Connection) -> None:
    """The pool's reset of a connection handed back: nothing beyond asyncpg's own rollback of an
    open transaction. Its default sends ``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
    ALL`` every time, one more round trip per store call (the webhook's ack included), to undo
    session state the store never creates: its locks are transaction-scoped, it declares no
    cursors, sets nothing, and listens on a connection of its own (``ChangeFeed``)."""


class ConnectionLost(ConnectionError):
    """The connection died under a transaction (asyncpg says so with an ``InterfaceError``)."""


class Connections:
    def __init__(self, pool: asyncpg.Pool, feed: ChangeFeed) -> None:
        self.pool = pool
        self.feed = feed

    async def close(self) -> None:
        await self.feed.close()
        await self.pool.close()

    async def retrying(self, attempt: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """``attempt`` on a pooled connection, again on a fresh one while PostgreSQL is away."""
        loop = asyncio.get_running_loop()
        give_up, pause = loop.time() + OUTAGE, 0.05
        while True:
            done, result = False, None
            try:
                async with self.pool.acquire() as db:
                    try:
                        result, done = await attempt(db), True
                    except (*RETRYABLE, asyncpg.InterfaceError, asyncpg.InternalClientError) as e:
                        # Misuse is an InterfaceError too: only one on a connection that died is retried.
                        if not isinstance(e, asyncpg.InterfaceError) or _dead(db):
                            _drop(db)  # the pool must not reset it on the way back: that fails too
                            raise ConnectionLost(str(e)) from e
                        raise
            except (*RETRYABLE, asyncpg.InternalClientError) as e:
                # Handing back a connection the server cut can fail after the attempt succeeded:
                # the pool drops that connection, and the result stands.
                if done:
                    return result  # type: ignore[return-value]
                if loop.time() + pause > give_up:
                    raise
                log.warning("store: %s; trying again in %.2f s", e, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            else:
                return result  # type: ignore[return-value]

    async def write(self, step: Callable[[Tx], Awaitable[T]], *touched: str, single: bool = False) -> T:
        """``step`` in one transaction; once committed, every store that listens hears which tables
        it touched, if it changed any row. A ``single`` statement that no other replica needs to
        hear of runs without BEGIN and COMMIT: one round trip instead of three."""
        changed, attempts = False, 0
        announced = set(touched) - LOCAL_TOPICS

        async def attempt(db: asyncpg.Connection) -> T:
            nonlocal changed, attempts
            attempts += 1
            tx = Tx(db)
            if single and not announced:
                result = await step(tx)
            else:
                async with db.transaction():
                    result = await step(tx)
                    if tx.changed and announced:
                        await db.execute("SELECT pg_notify($1, $2)", CHANNEL, self.feed.payload(announced))
            changed = tx.changed
            return result

        result = await self.retrying(attempt)
        if changed or attempts > 1:  # an attempt before the last may have committed, its answer lost
            self.feed.wake(set(touched))
        return result

    async def read(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.retrying(lambda db: db.fetch(sql, *args))


def _dead(db: asyncpg.Connection) -> bool:
    try:
        return db.is_closed()
    except asyncpg.InterfaceError:  # the pool took the dead connection back already
        return True


def _drop(db: asyncpg.Connection) -> None:
    try:
        db.terminate()
    except asyncpg.InterfaceError:  # released already
        pass
