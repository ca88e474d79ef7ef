"""A small event router after ``gidgethub.routing``: handlers registered per event type and action."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.intake.webhook import Event

Handler = Callable[..., Awaitable[None]]


class Router:
    def __init__(self, *others: Router) -> None:
        self._routes: dict[tuple[str, str | None], list[Handler]] = {}
        for other in others:
            for key, handlers in other._routes.items():
                self._routes.setdefault(key, []).extend(handlers)

    def add(self, func: Handler, event_type: str, action: str | None = None) -> None:
        self._routes.setdefault((event_type, action), []).append(func)

    def register(self, event_type: str, action: str | None = None) -> Callable[[Handler], Handler]:
        """Decorator: ``@router.register("issue_comment", action="created")``."""

        def decorator(func: Handler) -> Handler:
            self.add(func, event_type, action)
            return func

        return decorator

    def fetch(self, event: Event) -> list[Handler]:
        return self._routes.get((event.event_type, None), []) + self._routes.get(
            (event.event_type, event.action), []
        )

    def handles(self, event_type: str) -> bool:
        return any(t == event_type for t, _ in self._routes)

    async def dispatch(self, event: Event, *args: Any, **kwargs: Any) -> None:
        for handler in self.fetch(event):
            await handler(event, *args, **kwargs)
