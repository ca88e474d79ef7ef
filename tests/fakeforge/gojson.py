"""JSON bytes exactly as Go's ``encoding/json`` writes them.

Webhook bodies are signed over their exact bytes, and the bot must cope with Go's output, so the fake
serialises the way Gitea does rather than the way Python likes: ``<``, ``>``, ``&``, U+2028 and U+2029
escaped, everything else non-ASCII kept as UTF-8, ``\\b``/``\\f`` short escapes (Go >= 1.22), other control
characters as lowercase ``\\u00XX`` (Python agrees on all of that), and ``"key": value`` spacing.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

# Characters Go's HTML-safe encoder escapes that Python's encoder leaves alone. They only ever occur
# inside JSON strings, so replacing them in the finished text is safe.
_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's time.Time{} in RFC3339
UNIX_ZERO = "1970-01-01T00:00:00Z"  # timeutil.TimeStamp(0).AsTime()


def marshal_indent(value: Any) -> bytes:
    """``json.MarshalIndent(v, "", "  ")``: the webhook body (no trailing newline)."""
    text = json.dumps(value, ensure_ascii=False, indent=2, separators=(",", ": "))
    return text.translate(_GO_ESCAPES).encode()


def encode(value: Any) -> bytes:
    """``json.NewEncoder(w).Encode(v)``: an API response body (compact, trailing newline)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return (text.translate(_GO_ESCAPES) + "\n").encode()


def rfc3339(moment: datetime | None) -> str | None:
    """Go's ``time.RFC3339`` for a UTC instant (whole seconds, as Gitea stores unix seconds)."""
    if moment is None:
        return None
    moment = moment.astimezone(timezone.utc).replace(microsecond=0)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
