"""The pools as an operator sees them (limit, load, frozen, backoff, daily budget): one answer for the dashboard,
the admin API and the status comment, with the frozen switches decided by the claim's own rule."""

from __future__ import annotations

import time

from pydantic import BaseModel

from bot.settings import Settings
from bot.store import ACTIVE, Store, utc_day
from bot.store.policy import is_frozen


class PoolView(BaseModel):
    name: str
    limit: int
    active: int
    queued: int
    frozen: bool
    backoff_until: float | None
    daily_usd: float | None = None  # what the pool may spend per UTC day (budgets.pools.<name>.daily_usd)
    spent_today_usd: float | None = None  # what it spent today, with a daily budget
    daily_spent: bool = False  # its daily budget is spent: its queued runs wait for the next UTC day


class PoolsView(BaseModel):
    frozen: bool
    max_running: int
    pools: list[PoolView]


def limit(settings: Settings, name: str) -> int:
    """A pool's limit: configured, else the bot's (as the claim counts it)."""
    return settings.pools[name].limit if name in settings.pools else settings.max_running


async def bot_frozen(settings: Settings, store: Store) -> bool:
    return is_frozen(await store.flag("frozen"), settings.frozen)


async def pools_view(settings: Settings, store: Store) -> PoolsView:
    """Every pool configured, recorded or holding live runs."""
    census = await store.census()
    recorded = {p.name: p for p in await store.pools()}
    names = sorted(set(settings.pools) | set(recorded) | {pool for pool, _ in census.live})
    now = time.time()
    views = []
    for name in names:
        state = recorded.get(name)
        cap = settings.budgets.daily_for_pool(name)
        spent = await store.spent(utc_day(now), pool=name) if cap is not None else None
        views.append(PoolView(
            name=name, limit=limit(settings, name),
            active=sum(n for (pool, s), n in census.live.items() if pool == name and s in ACTIVE),
            queued=census.live.get((name, "queued"), 0),
            frozen=is_frozen(state.frozen if state else None, settings.pool_of(name).frozen),
            backoff_until=state.paused_until if state and state.paused_until > now else None,
            daily_usd=cap, spent_today_usd=spent, daily_spent=cap is not None and spent is not None and spent >= cap,
        ))
    return PoolsView(frozen=await bot_frozen(settings, store), max_running=settings.max_running, pools=views)
