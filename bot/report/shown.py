"""What the Forge was last made to show of a run, facet by facet: the store's ``reported`` rows, typed.

Each facet reporter reads its own fields and remembers its own keys (``remember``), so a retry after
a failure resumes where the last attempt stopped and nothing is created twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.store import Store


@dataclass(frozen=True)
class Spell:
    """The stopwatch as last set for one spell of the agent's work (keyed by the run's ``started_at``)."""

    action: str  # "started" or "stopped"
    spell: float | None


@dataclass(frozen=True)
class Progress:
    """When the status comment last showed a working run's progress, and in which state: the next
    edit that shows only progress waits ``progress_interval`` from then."""

    state: str
    at: float


@dataclass(frozen=True)
class Pull:
    number: int
    url: str


@dataclass
class Shown:
    version: int = 0
    comment_id: int | None = None
    comment_url: str = ""
    comment_body: str | None = None
    state_label: str | None = None
    stopwatch: Spell | str | None = None  # a Spell, or DISABLED when time tracking is off
    status: tuple[str, str] | None = None  # (sha, state) of the commit status
    review: int | None = None
    pull: Pull | None = None
    progress: Progress | None = None

    @classmethod
    def of(cls, facets: Mapping[str, Any]) -> Shown:
        watch = facets.get("stopwatch")
        pull = facets.get("pull")
        status = facets.get("status")
        progress = facets.get("progress")
        return cls(
            version=facets.get("version", 0),
            comment_id=facets.get("comment_id"),
            comment_url=facets.get("comment_url", ""),
            comment_body=facets.get("comment_body"),
            state_label=facets.get("state_label"),
            stopwatch=Spell(*watch) if isinstance(watch, list) else watch,
            status=tuple(status) if status else None,
            review=facets.get("review"),
            pull=Pull(pull["number"], pull.get("url", "")) if pull else None,
            progress=Progress(*progress) if progress else None,
        )


async def shown(store: Store, run_id: int) -> Shown:
    return Shown.of(await store.reported(run_id))


async def remember(store: Store, run_id: int, shown: Shown, **facets: Any) -> None:
    """Record facets as shown, in the store (as JSON) and in ``shown``."""
    for name, value in facets.items():
        setattr(shown, name, value)
        if isinstance(value, Spell):
            value = [value.action, value.spell]
        elif isinstance(value, Progress):
            value = [value.state, value.at]
        elif isinstance(value, Pull):
            value = {"number": value.number, "url": value.url}
        await store.set_reported(run_id, name, value)
