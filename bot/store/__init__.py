"""The store: the bot's whole state, durable, behind one interface.

Callers import everything from here. What the store holds (``model``), which queued runs may
start (``policy``) and how workers hear of changes (``signals``) know nothing of SQL; the SQLite
backend (``sqlite``) does. A second backend (PostgreSQL, for several bot replicas) implements
the same methods next to it and reuses the rest.
"""

from bot.store.model import ACTIVE, AT_WORK, CANCELLABLE, LIVE, RETRYABLE, STATES, TERMINAL, TRANSITIONS, WAITING
from bot.store.model import OutboxItem, PoolState, Pruned, Run, RunRequest, RunResult
from bot.store.model import Census, RunEvent, StateChange
from bot.store.signals import Subscription
from bot.store.sqlite import SqliteStore as Store

__all__ = [
    "ACTIVE", "AT_WORK", "CANCELLABLE", "LIVE", "RETRYABLE", "STATES", "TERMINAL", "TRANSITIONS", "WAITING",
    "OutboxItem", "PoolState", "Pruned", "Run", "RunRequest", "RunResult", "Store", "Subscription",
    "Census", "RunEvent", "StateChange",
]
