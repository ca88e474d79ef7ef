"""The store: the bot's whole state, durable, behind one interface.

Callers import everything from here. What the store holds (``model``), which queued runs may
start (``policy``) and how workers hear of changes (``signals``) know nothing of SQL; the SQLite
backend (``sqlite``) does. A second backend (PostgreSQL, for several bot replicas) implements
the same methods next to it and reuses the rest.
"""

from .model import ACTIVE, LIVE, STATES, TERMINAL, TRANSITIONS, WAITING, OutboxItem, PoolState, Pruned, Run, RunRequest
from .model import Census, RunEvent, Transition
from .signals import Subscription
from .sqlite import SqliteStore as Store

__all__ = [
    "ACTIVE", "LIVE", "STATES", "TERMINAL", "TRANSITIONS", "WAITING",
    "OutboxItem", "PoolState", "Pruned", "Run", "RunRequest", "Store", "Subscription",
    "Census", "RunEvent", "Transition",
]
