"""What runs' model calls used, as the admin API, MCP, the CLI client and the dashboard show it.

The views carry the numbers (for machines) and the line in words (the status comment's, from
``bot.report.usage``), so every face agrees with the Forge.
"""

from __future__ import annotations

import time
from dataclasses import asdict

from pydantic import BaseModel

from bot.report import usage as words
from bot.store import ModelUsage, Store, Usage, UsageTotal

DAY = 86400.0
WEEK = 7 * DAY


class ModelUsageView(BaseModel):
    """One model's share (or, as ``total``, all models together; its model is "")."""

    model: str
    calls: int
    input_tokens: int  # cached ones included
    output_tokens: int  # reasoning ones included
    cached_tokens: int
    reasoning_tokens: int
    cost_usd: float | None  # None: some model has no price ("cost unknown")
    wait_seconds: float

    @classmethod
    def of(cls, part: ModelUsage) -> ModelUsageView:
        return cls(**asdict(part))


class UsageView(BaseModel):
    line: str  # in words, as the status comment says it; "" with no model call
    total: ModelUsageView
    by_model: list[ModelUsageView]
    actions: list[str]  # the agent's last few actions, oldest first (masked and shortened)

    @classmethod
    def of(cls, usage: Usage) -> UsageView:
        return cls(
            line=words.usage_line(usage), total=ModelUsageView.of(usage.total),
            by_model=[ModelUsageView.of(m) for m in usage.by_model], actions=list(usage.actions),
        )


class UsageTotalView(BaseModel):
    """What one repository's runs of one agent used over the period."""

    repo: str
    agent: str
    runs: int
    usage: UsageView

    @classmethod
    def of(cls, total: UsageTotal) -> UsageTotalView:
        return cls(repo=total.repo, agent=total.agent, runs=total.runs, usage=UsageView.of(total.usage))


class UsageTotals(BaseModel):
    """Totals per repository and agent over the last day and the last week."""

    day: list[UsageTotalView]
    week: list[UsageTotalView]


async def usage_totals(store: Store, now: float | None = None) -> UsageTotals:
    now = time.time() if now is None else now
    return UsageTotals(
        day=[UsageTotalView.of(t) for t in await store.usage_totals(now - DAY)],
        week=[UsageTotalView.of(t) for t in await store.usage_totals(now - WEEK)],
    )
