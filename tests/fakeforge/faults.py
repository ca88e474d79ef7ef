"""Fault injection for resilience tests: flaky answers, hangs, and whole outages.

An injected fault hits the REST API only (never git, never webhooks) and comes in two flavours:
*before* the handler runs (nothing happened; a blind retry is harmless) and *after* it ran (the write
is done, but the client sees an error or nothing) -- the case that catches a client blindly retrying a
create. Hangs last longer than any sane client timeout and end early when the fake closes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

# before_*: fail without applying; after_*: apply the request, then fail.
FAULT_KINDS = ("before_500", "before_502", "before_hang", "after_500", "after_hang")
OUTAGE_MODES = ("refuse", "reset", "503")


@dataclass(frozen=True)
class InjectedFault:
    kind: str
    method: str
    path: str

    @property
    def applied(self) -> bool:
        """True when the request took effect although the client saw a failure."""
        return self.kind.startswith("after_")


@dataclass
class Faults:
    """The dice and the switches; the server asks it what to do with each API call."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    hang_seconds: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    outage_mode: str | None = None
    only: re.Pattern[str] | None = None  # when set, only calls whose path it finds can fail
    injected: list[InjectedFault] = field(default_factory=list)

    def configure(self, rate: float, *, seed: int | None = None, kinds: tuple[str, ...] | None = None,
                  hang_seconds: float | None = None, only: str | None = None) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        unknown = set(kinds or ()) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        self.rate = rate
        self.kinds = tuple(kinds or FAULT_KINDS)
        self.only = re.compile(only) if only else None
        if seed is not None:
            self.rng = random.Random(seed)
        if hang_seconds is not None:
            self.hang_seconds = hang_seconds

    def roll(self, method: str, path: str) -> InjectedFault | None:
        if self.rate <= 0.0 or (self.only and not self.only.search(path)) or self.rng.random() >= self.rate:
            return None
        fault = InjectedFault(self.rng.choice(self.kinds), method, path)
        self.injected.append(fault)
        return fault
