"""A fake Gitea 1.26 / Forgejo 15 for integration tests: REST API checked against the official swagger
spec, smart-HTTP git through ``git http-backend``, and webhooks signed and serialised like Gitea's.

    forge = FakeForge(root=tmp_path)                  # forgejo=True for Forgejo 15
    await forge.start()                               # forge.url == "http://127.0.0.1:PORT"
    bot = forge.add_user("dispatchbot")               # .id, .login, .token
    repo = forge.add_repo("acme", "widgets", files={"README.md": "hi\n"})
    forge.set_permission(repo, "dispatchbot", "admin")
    forge.add_hook(repo, url=bot_url + "/webhook", secret="s3cret")
    issue = await forge.create_issue(repo, alice, title="Crash", labels=["kind/bug"])  # webhook answered
    ...
    assert forge.violations == []                     # the client kept to the spec
    await forge.close()

Layers, bottom up: ``state`` (data and ids), ``render`` (Gitea's convert: JSON in wire order),
``hooks`` (payloads, signatures, delivery), ``service`` (business rules + notifier), ``api`` (REST
handlers), ``spec`` (swagger routing and checking), ``git`` (bare repos, http-backend), ``faults``,
``server`` (HTTP plumbing), ``forge`` (the facade). ``fixtures`` offers a ready ``fake_forge`` fixture;
tests/test_fakeforge.py shows everything in use.
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
