"""One set of name rules: the comment parser and the agent registry accept and refuse the same specs."""

import pytest

from bot.runs import agents
from bot.intake import commands
from bot.settings import Settings

SETTINGS = Settings(_env_file=None)


@pytest.mark.parametrize("spec", ["local:qwen3:8b", "local:hf.co/org/model:q4_K_M", "codex:o3", "claude", "gemini:pro"])
def test_a_spec_the_registry_takes_is_a_spec_the_parser_takes(spec):
    agents.resolve(SETTINGS, spec)
    [command] = commands.parse(f"/dispatch {spec} fix it")
    assert not command.error and command.agent_spec == spec


@pytest.mark.parametrize("spec", ["codex:-m", "codex:" + "m" * 101, "codex:.hidden", "co/dex", "-codex", "x" * 41])
def test_a_spec_the_registry_refuses_is_a_spec_the_parser_refuses(spec):
    with pytest.raises(ValueError):
        agents.resolve(SETTINGS, spec)
    [command] = commands.parse(f"/dispatch {spec} fix it")
    assert command.error
