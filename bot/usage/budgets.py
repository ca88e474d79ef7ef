"""The budgets a run's model calls are held to: per run (USD, tokens, calls; the gateway refuses the
call after the one that reached a cap) and per repository and pool per UTC day (the claim keeps
their new runs queued until the day is over).

Days are UTC and read off a ``Clock``, which a test moves instead of waiting for midnight.
"""

from __future__ import annotations

import calendar
import time

from bot.report import sentences
from bot.report import usage as words
from bot.settings import Budget, Settings
from bot.store import ModelUsage, Run, Store, utc_day
from bot.store.policy import Daily, Hold, Spent, daily_hold


class Clock:
    """The time budgets count by: the system's, plus ``skew`` seconds a test may add."""

    def __init__(self) -> None:
        self.skew = 0.0

    def now(self) -> float:
        return time.time() + self.skew


def reached(budget: Budget, used: ModelUsage, priced_usd: float | None = None) -> str:
    """Why a run may make no more model calls ("" while it may): the first cap its usage reached.
    ``used.cost_usd`` is None when some calls had no price; ``priced_usd`` is what the priced ones
    cost, which is what a cap in USD counts then."""
    spent = used.cost_usd if used.cost_usd is not None else priced_usd
    if budget.run_usd is not None and spent is not None and spent >= budget.run_usd:
        return sentences.budget_reached(words.cost(budget.run_usd), used, spent)
    if budget.run_tokens is not None and used.input_tokens + used.output_tokens >= budget.run_tokens:
        return sentences.budget_reached(words.plural(budget.run_tokens, "token"), used, spent)
    if budget.run_calls is not None and used.calls >= budget.run_calls:
        return sentences.budget_reached(words.plural(budget.run_calls, "model call"), used, spent)
    return ""


def daily(settings: Settings) -> Daily | None:
    """The daily budgets the claim obeys, None when there are none."""
    pools = {name: b.daily_usd for name, b in settings.budgets.pools.items() if b.daily_usd is not None}
    if settings.budgets.daily_usd is None and not pools:
        return None
    return Daily(settings.budgets.daily_usd, pools)


async def hold(settings: Settings, store: Store, run: Run, now: float) -> Hold | None:
    """The spent daily budget that keeps ``run`` queued today, decided as the claim decides it."""
    caps = daily(settings)
    if caps is None:
        return None
    day = utc_day(now)
    repo = f"{run.owner}/{run.repo}"
    spent = Spent({repo: await store.spent(day, repo=repo)}, {run.pool: await store.spent(day, pool=run.pool)})
    return daily_hold(caps, spent, run.owner, run.repo, run.pool)


def next_day(now: float) -> float:
    """When the UTC day of ``now`` ends."""
    year, month, day = time.gmtime(now)[:3]
    return calendar.timegm((year, month, day, 0, 0, 0)) + 86400


async def hold_line(settings: Settings, store: Store, run: Run, now: float) -> str:
    """The status comment's sentence for a run a spent daily budget keeps queued; "" when none does."""
    found = await hold(settings, store, run, now)
    if found is None:
        return ""
    return sentences.daily_budget_spent(found.whose, found.name, found.cap, found.spent, next_day(now))
