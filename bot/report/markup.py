"""Someone else's text inside what the bot posts, shown as written and with no effect: the two
forms every sentence uses (``bot.report.sentences``), kept apart so that the parsing of commands,
which quotes a user's words back, needs nothing else of the report."""

from __future__ import annotations

import re


def fenced(text: str) -> str:
    """Text in a code fence nothing inside it can close (longer than its longest run of backticks):
    the agent's and users' text shows as it is, adds no markup around it (no image for a reader's
    browser to fetch, no HTML, no mention), and names no issue for the Forge to close (Gitea looks
    for closing keywords outside code only). Every line break is made a newline first, so the
    renderer and the bot (which may quote the lines) see the same lines."""
    text = "\n".join(text.splitlines())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}\n{text}\n{fence}"


_PUNCTUATION = re.compile(r"[!-/:-@\[-`{-~]")  # ASCII punctuation: CommonMark lets "\" escape each
# Brackets as entities: Gitea may read "\(" and "\[" as math; "@" full-width: Gitea finds mentions
# in the rendered text, escaped or not.
_AS = {"(": "&#40;", ")": "&#41;", "[": "&#91;", "]": "&#93;", "@": "\uff20"}


def plain(text: str) -> str:
    """One line of someone else's text inside a sentence, shown as written with no effect: every
    ASCII punctuation sign escaped (no markup, link, image, HTML, entity or math can form), on one
    line, and "[[" broken (Gitea makes "[[…]]" a link after rendering, an image if it ends in .png)."""
    line = re.sub(r"\[(?=\[)", "[\u2060", " ".join(text.split()))
    return _PUNCTUATION.sub(lambda m: _AS.get(m.group(0)) or "\\" + m.group(0), line)
