"""The store: the bot's whole state, durable, behind one interface.

Callers import everything from here. What the store holds (``model``), which queued runs may
start (``policy``) and how workers hear of changes (``signals``) know nothing of SQL; the
backends do: SQLite (``sqlite``), the embedded default for one machine, and PostgreSQL
(``postgres``), shared by several bot replicas. Both have the same methods; ``open_store``
picks one by its location.
"""

from pathlib import Path

from bot.store.model import ACTIVE, AT_WORK, CANCELLABLE, LIVE, RETRYABLE, STATES, TERMINAL, TRANSITIONS, WAITING
from bot.store.model import OutboxItem, PoolState, Pruned, Run, RunRequest, RunResult
from bot.store.model import Census, ModelUsage, Replica, RunEvent, StateChange, Usage, UsageTotal, utc_day
from bot.store.postgres import PostgresStore
from bot.store.signals import Subscription
from bot.store.sqlite import SqliteStore

Store = SqliteStore | PostgresStore

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


async def open_store(location: str | Path) -> Store:
    """A ``postgresql://`` URL opens the PostgreSQL backend; a path, a SQLite file."""
    if is_postgres(location):
        return await PostgresStore.open(str(location))
    return await SqliteStore.open(Path(location))


__all__ = [
    "ACTIVE", "AT_WORK", "CANCELLABLE", "LIVE", "RETRYABLE", "STATES", "TERMINAL", "TRANSITIONS", "WAITING",
    "OutboxItem", "PoolState", "Pruned", "Run", "RunRequest", "RunResult", "Store", "Subscription",
    "Census", "ModelUsage", "Replica", "Usage", "UsageTotal", "utc_day", "RunEvent", "StateChange", "PostgresStore", "SqliteStore", "is_postgres", "open_store",
]
