"""Command parsing: examples, and properties that hold for any text."""

from hypothesis import given
from hypothesis import strategies as st

from bot.intake.commands import COMMAND_RE, FENCE_RE, NAMES, Command, parse


def test_dispatch_with_model_and_task():
    [cmd] = parse("/dispatch claude:opus fix the flaky test")
    assert (cmd.name, cmd.agent, cmd.model, cmd.text, cmd.error) == ("dispatch", "claude", "opus", "fix the flaky test", "")


def test_task_runs_to_the_next_command_and_is_verbatim():
    body = "please\n/dispatch codex do `rm -rf $(x)`; echo 'hi'\n  keep <!-- this -->\n/status"
    dispatch, status = parse(body)
    assert dispatch.text == "do `rm -rf $(x)`; echo 'hi'\n  keep <!-- this -->"
    assert status.name == "status" and status.line == 3


def test_commands_in_code_blocks_and_mid_line_are_ignored():
    assert parse("```\n/dispatch codex\n```\nsay /cancel please") == []


def test_foreign_slash_commands_are_ignored():
    assert parse("/time start\n/assign @me\n/dispatched") == []


def test_review_retry_and_answer():
    review, retry, answer = parse("/review\n/retry\n/answer use the v2 API\nand keep v1")
    assert review == Command("review", 0)
    assert retry == Command("retry", 1)
    assert answer.text == "use the v2 API\nand keep v1"


def test_malformed_arguments_give_errors_that_show_usage():
    errors = [c.error for c in parse("/dispatch\n/cancel now\n/answer\n/dispatch bad!name\n/review codex extra\n/dispatch codex:")]
    assert len(errors) == 6 and all("usage" in e for e in errors)
    assert "needs an agent" in errors[0] and "no arguments" in errors[1] and "answer text" in errors[2]


def test_names_are_case_insensitive_and_agents_lowercased():
    [cmd] = parse("/Dispatch Codex:o3 go")
    assert (cmd.name, cmd.agent, cmd.model) == ("dispatch", "codex", "o3")


@given(st.text())
def test_any_text_parses_without_exception(text):
    for cmd in parse(text):
        assert cmd.name in NAMES
        assert cmd.error or cmd.name not in ("dispatch",) or cmd.agent


agents = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
models = st.one_of(st.just(""), st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,20}", fullmatch=True))
def _as_typed(text: str) -> str:
    """A command's text as parsing keeps it: whitespace around it and at the end of its first line
    (the command's own line) is not part of it."""
    first, newline, rest = text.strip().partition("\n")
    return (first.rstrip() + newline + rest).strip()


texts = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200).map(_as_typed).filter(
    lambda t: not any(COMMAND_RE.match(line) or FENCE_RE.match(line) for line in t.replace("\r", "\n").split("\n"))
    and "\r" not in t
)


def typed(cmd: Command) -> str:
    """The command as a user would type it; parsing it should give the command back."""
    head = " ".join(["/" + cmd.name, *([cmd.agent_spec] if cmd.agent else [])])
    return f"{head} {cmd.text}" if cmd.text else head


@given(agents, models, texts)
def test_dispatch_round_trips(agent, model, text):
    cmd = Command("dispatch", 0, agent=agent, model=model, text=text)
    assert parse(typed(cmd)) == [cmd]


@given(texts.filter(bool))
def test_answer_round_trips(text):
    cmd = Command("answer", 0, text=text)
    assert parse(typed(cmd)) == [cmd]


def test_parsing_stops_after_the_limit_and_keeps_the_last_ones_text_whole():
    body = "/dispatch codex fix\nthe tests\n/help\n/cancel\n" + "/help\n" * 100_000
    commands = parse(body, limit=2)
    assert [c.name for c in commands] == ["dispatch", "help"] and commands[0].text == "fix\nthe tests"
    assert parse(body, limit=2) == parse(body)[:2]
