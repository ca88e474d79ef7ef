"""What the bot posts of others' text (the agent's review, question and paths; an issue's title):
shown as written, with nothing in it that renders: no image (a reader's browser would fetch its
address, which can carry the private code out), no HTML, no mention, no markup at all."""

import re
from dataclasses import replace

from bot.report import sentences
from bot.report.sentences import fenced, plain
from bot.store import Run, RunRequest

# Ways around a cleverer filter, found by an attacker's reading and checked with renderers
# (goldmark as Gitea sets it up, cmark-gfm, markdown-it): each rendered an image or HTML.
HOSTILE = [
    "```\r\ncode\r\n```\r\n<img src=//e/1.png>\r\n",  # CRLF: a fence the filter saw open
    "~~~\r~~~\r<img src=//e/2.png>",  # a lone CR is a line break to the renderer
    "`\x0c\x0c<img src=//e/3.png>`",  # and so are these to a quote that splits the lines again
    "~~~\u2028~~~\u2028<img src=//e/4.png>",
    "a `\n\u00a0\n`<img src=//e/5.png>`",  # a line of a no-break space is no blank line
    "[a](`b)![x](//e/6.png) @admin`",  # a link's destination takes the backtick first
    "# `<img src=//e/7.png>{title=\"`\"}",  # heading attributes
    "$a`$ `x` <img src=//e/8.png> `",  # Gitea's inline math takes the backtick first
    "$$\n```\n$$\n<img src=//e/9.png>",  # and its math block the fence
    "hi &#64;admin and &commat;root",  # rendered "@admin", then mentioned
    "````\n````` x\n![i](//e/10.png)",
]


def lines_of_one_block(block: str) -> list[str]:
    """The lines inside ``block``, which must be one code fence nothing inside can close."""
    assert "\r" not in block and all(len(line.splitlines()) <= 1 for line in block.split("\n")), repr(block)
    first, *inside, last = block.split("\n")
    assert re.fullmatch(r"`{3,}", first) and last == first, block
    assert not any(re.fullmatch(rf" {{0,3}}`{{{len(first)},}}\s*", line) for line in inside), block
    return inside


def test_the_agents_text_is_one_code_fence_it_cannot_close_or_leave():
    for text in HOSTILE:
        inside = lines_of_one_block(fenced(text))
        assert inside == text.splitlines(), text  # shown as written, line by line


def test_one_line_of_anyones_text_is_plain_text():
    for text in [*HOSTILE, "Fix ![x](http://evil.invalid/t.png) for @rita <b>", "[[https://e/11.png]]", "a (b) [~ x"]:
        made = plain(text)
        assert "\n" not in made and "@" not in made and "[[" not in made, made
        bare = re.sub(r"&#\d+;", "", made.replace("\\\\", ""))  # what is left once escapes and entities are read
        assert re.search(r"(?<!\\)[!-/:-?\[\]^_`{-~]", bare) is None, made
    assert plain("Fix ![x](u) for @rita") == "Fix \\!&#91;x&#93;&#40;u&#41; for ＠rita"  # renders as typed
    # Gitea links "[[…]]" after rendering (an image, if it ends in .png) and may read "\(" as math.
    assert plain("[[x.png]] (b)") == "&#91;\u2060&#91;x\\.png&#93;&#93; &#40;b&#41;"


def test_the_question_the_task_and_the_paths_in_the_status_comment_show_nothing_active():
    request = RunRequest(owner="acme", repo="widgets", number=1, is_pull=False, agent="codex", model="", pool="codex",
                         review=False, task="Fix ![x](http://evil.invalid/t.png) for @rita", trigger="label",
                         requested_by="bob")
    for question in HOSTILE:
        run = replace(Run.draft(request), state="blocked", question=question)
        body = sentences.status_comment(run)
        assert f"Requested by @bob: “{plain(request.task)}”" in body
        quoted = [line for line in body.split("\n") if line.startswith(">")]
        assert lines_of_one_block("\n".join(line.removeprefix("> ") for line in quoted)) == question.strip().splitlines()
    violations = [f"protected path changed: {HOSTILE[1]}", "file over 1048576 bytes: <img src=//e/p.png>"]
    failed = replace(Run.draft(request), state="failed", reason="branch rules",
                     result=replace(Run.draft(request).result, violations=violations))
    assert fenced("\n".join(violations)) in sentences.status_comment(failed)  # one block, as tested above
    # Why a run waits quotes the Forge's answer (a proxy's HTML page) or names a user: plain text.
    pause = sentences.forge_pause("GET /api/v1/repos/acme/widgets → 502: <h1>Bad Gateway</h1>", 0)
    waiting = replace(Run.draft(request), state="preparing", reason=pause)
    body = sentences.status_comment(waiting)
    assert f"Reason: {plain(pause)}" in body and "<h1>" not in body
    assert "＠rita" in sentences.status_comment(replace(waiting, state="queued", reason="answered by @rita"))


def test_what_the_gateway_refused_is_listed_as_plain_text():
    """The agent chose the host it asked the proxy for (a CONNECT takes any text) and the path."""
    lines = sentences.egress_lines({"blocked": {"![x](//e/1.png)@admin:443": 2, "POST /v1/files (openai API)": 1}})
    text = "\n".join(lines)
    assert "![x]" not in text and "@admin" not in text, text
    assert "2 connections to " in text and f"1 call {plain('POST /v1/files (openai API)')}" in text, text
