"""Logging set-up and secret masking: no token or key may reach a log line or a comment."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "••••••"
MIN_SECRET_LENGTH = 16  # shorter ones turn up by chance in ordinary text, and what the masks leave gives them away


EMBEDDED_LENGTH = 8  # from this length a secret is masked wherever it appears, not only as a word


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace each secret, also inside other text (``x<key>``, a URL, a JSON string) and reversed,
    since an agent that means to leak a key may dress it up. A secret too short for that (it would
    turn up inside ordinary words) is masked only as a whole word."""
    for secret in sorted(set(filter(None, secrets)), key=len, reverse=True):
        if len(secret) >= EMBEDDED_LENGTH:
            text = text.replace(secret, MASK).replace(secret[::-1], MASK)
        else:
            text = re.sub(rf"(?<![^\W_]){re.escape(secret)}(?![^\W_])", MASK, text)
    return text


def tail(text: str, lines: int = 30, chars: int = 4000) -> str:
    """The last lines of a log, bounded in size, for a status comment."""
    return "\n".join(text.rstrip().splitlines()[-lines:])[-chars:]


class MaskSecrets(logging.Filter):
    """Rewrites every record so that configured secrets never reach a handler."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask(message, self.secrets)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


def setup(secrets: list[str], level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskSecrets(secrets))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # a line per job run is noise
