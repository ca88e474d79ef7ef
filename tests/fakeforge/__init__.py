"""A fake Gitea 1.26 / Forgejo 15 for integration tests: REST API checked against the official swagger
spec, smart-HTTP git through ``git http-backend``, and webhooks signed and serialised like Gitea's.

Start with ``FakeForge``; see its docstrings, and tests/test_fakeforge.py for examples.
"""

from .faults import FAULT_KINDS, OUTAGE_MODES, InjectedFault
from .forge import FakeForge
from .hooks import Delivery
from .server import RequestRecord, Violation
from .state import Comment, Hook, Issue, Label, Pull, Reaction, Repo, Review, Status, Stopwatch, TrackedTime, User

__all__ = [
    "FAULT_KINDS",
    "OUTAGE_MODES",
    "Comment",
    "Delivery",
    "FakeForge",
    "Hook",
    "InjectedFault",
    "Issue",
    "Label",
    "Pull",
    "Reaction",
    "Repo",
    "RequestRecord",
    "Review",
    "Status",
    "Stopwatch",
    "TrackedTime",
    "User",
    "Violation",
]
