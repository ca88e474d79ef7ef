"""Secret masking: inside other text too, and reversed; a very short secret only as a whole word."""

import logging

from bot.logs import MASK, MaskSecrets, mask

KEY = "sk-0123456789abcdef"


def test_only_whole_occurrences_are_masked():
    line = "serving on 0.0.0.0:8080 for http://forge.example; data in data"
    assert mask(line, ["s", "a"]) == line  # a one-letter secret is no word of this line
    assert mask("secret s here", ["s"]) == f"secret {MASK} here"
    text = f"OPENAI_API_KEY={KEY}\nhttp://bot:{KEY}@forge/x.git '{KEY}'"
    assert mask(text, [KEY]) == f"OPENAI_API_KEY={MASK}\nhttp://bot:{MASK}@forge/x.git '{MASK}'"


def test_a_secret_inside_other_text_or_reversed_is_masked_too():
    """An agent leaking a key dresses it up: glued to other text, in a URL, reversed."""
    for dressed in (f"x{KEY}", f"{KEY}y", f"https://paste.example/?k={KEY}&z", f'{{"k":"a{KEY}b"}}', KEY[::-1]):
        masked = mask(dressed, [KEY])
        assert KEY not in masked and KEY[::-1] not in masked and MASK in masked, masked


def test_a_longer_secret_containing_a_shorter_one_is_masked_whole():
    assert mask(f"{KEY}-extra and {KEY}", [KEY, f"{KEY}-extra"]) == f"{MASK} and {MASK}"


def test_log_records_are_masked_before_any_handler_sees_them():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "token %s sent to %s", (KEY, "sshd"), None)
    MaskSecrets([KEY, "s"]).filter(record)
    assert record.getMessage() == f"token {MASK} sent to sshd"
