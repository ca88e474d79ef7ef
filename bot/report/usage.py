"""What a run's model calls used, in words: the one place the usage line and the progress are worded.

The status comment, the pull request's footer, the dashboard and the API's text all say it the same
way. A cost is never guessed: when any model of the run has no price, the line says "cost unknown".
``bot.report.sentences`` puts these lines into the status comment.
"""

from __future__ import annotations

from bot.store import ModelUsage, Usage


def duration(seconds: float) -> str:
    """``45s``, ``2m10s``, ``1h05m``: short enough for a line that says several things."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def waited(seconds: float) -> str:
    """Time waiting on the model: under 10 s to a tenth (a call's wait is often under a second)."""
    if 0 < seconds < 0.05:
        return "<0.1s"
    return f"{seconds:.1f}s" if seconds < 10 else duration(seconds)


def count(n: int) -> str:
    return f"{n:,}"


def cost(usd: float | None) -> str:
    """Dollars to the cent; a cost under a cent says so rather than "$0.00"; None is "cost unknown"."""
    if usd is None:
        return "cost unknown"
    if 0 < usd < 0.005:
        return "<$0.01"
    return f"${usd:,.2f}"


def plural(n: int, word: str) -> str:
    return f"{count(n)} {word}{'' if n == 1 else 's'}"


def parts(total: ModelUsage) -> list[str]:
    """The usage line's pieces: calls, tokens in (cached) and out (reasoning), cost, waiting."""
    tokens_in = f"{count(total.input_tokens)} tokens in"
    if total.cached_tokens:
        tokens_in += f" ({count(total.cached_tokens)} cached)"
    tokens_out = f"{count(total.output_tokens)} out"
    if total.reasoning_tokens:
        tokens_out += f" ({count(total.reasoning_tokens)} reasoning)"
    return [plural(total.calls, "model call"), tokens_in, tokens_out, cost(total.cost_usd),
            f"{waited(total.wait_seconds)} waiting on the model"]


def usage_line(usage: Usage) -> str:
    """``12 model calls · 48,210 tokens in (30,000 cached) · 3,100 out · $0.42 · 2m10s waiting on the
    model``; "" for a run that made no model call."""
    total = usage.total
    return " · ".join(parts(total)) if total.calls else ""


def progress_line(usage: Usage, elapsed: float) -> str:
    """How long the run has worked and what its model calls used so far."""
    total = usage.total
    used = " · ".join(parts(total)) if total.calls else "no model call yet"
    return f"Working for {duration(elapsed)}: {used}"


def brief(usage: Usage) -> str:
    """For a table cell: ``12 calls · 51,310 tokens · $0.42``; "—" with no model call."""
    total = usage.total
    if not total.calls:
        return "—"
    return f"{plural(total.calls, 'call')} · {count(total.input_tokens + total.output_tokens)} tokens · {cost(total.cost_usd)}"


def actions(usage: Usage) -> list[str]:
    """The agent's last actions, oldest first, a run of the same one said once: ``wrote a.py (×3)``."""
    shown: list[tuple[str, int]] = []
    for action in usage.actions:
        if shown and shown[-1][0] == action:
            shown[-1] = (action, shown[-1][1] + 1)
        else:
            shown.append((action, 1))
    return [f"{action} (×{n})" if n > 1 else action for action, n in shown]
