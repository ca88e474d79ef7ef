"""What a model call costs, from the configured price table (USD per million tokens)."""

from __future__ import annotations

import re

from bot.settings import Price
from bot.store import ModelUsage

# What may follow a configured name in the model's own name: a date, as vendors name snapshots
# (claude-sonnet-4-5-20250929, gpt-5-2025-08-07), optionally more after it.
_DATED = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})(\b|$)")


def price_of(prices: dict[str, Price], model: str) -> Price | None:
    """The price of ``model``: its own entry, else the longest entry it is a dated snapshot of (a
    provider's prefix such as ``anthropic/`` ignored); None when the table has no price for it."""
    for name in (model, model.rpartition("/")[2]):
        if name in prices:
            return prices[name]
    name = model.rpartition("/")[2]
    matches = [entry for entry in prices if name.startswith(entry) and _DATED.match(name, len(entry))]
    return prices[max(matches, key=len)] if matches else None


def cost(price: Price | None, usage: ModelUsage) -> float | None:
    """USD for ``usage`` at ``price``; None without a price. Cached prompt tokens cost the cached
    price, the rest of the prompt the input price (cache writes too, which some vendors charge more)."""
    if price is None:
        return None
    fresh = max(usage.input_tokens - usage.cached_tokens, 0)
    return (fresh * price.input + usage.cached_tokens * price.cached + usage.output_tokens * price.output) / 1e6
