"""Prompt options of API dispatches: template, plan template, persona and variables reach the prompt."""

from pathlib import Path

import pytest

from bot.runs.prompt import PromptContext, build_prompt, check_options, known_personas, known_plans, known_templates
from bot.settings import Settings


def context(repo_dir: Path, **options) -> PromptContext:
    return PromptContext(
        task="check the parser", owner="acme", repo="widgets", branch="agent/x", number=3, is_pull=False,
        issue_title="Parser", issue_body="", repo_dir=repo_dir, options=options,
    )


def section(prompt: str, title: str) -> str:
    return prompt.split(f"## {title}\n\n", 1)[1].split("\n\n## ", 1)[0]


def test_shipped_choices():
    assert {"coding", "conventions", "security", "review", "verify"} <= set(known_templates(Settings()))
    assert {"maintainer", "security"} <= set(known_personas())
    assert {"bugfix", "feature"} <= set(known_plans())


async def test_template_persona_plan_and_variables_reach_the_prompt(tmp_path):
    prompt = await build_prompt(
        context(tmp_path, template="verify", persona="security", plan_template="bugfix",
                variables={"symptom": "a crash on {empty} input"}),
        Settings(),
    )
    persona = section(prompt, "PERSONA")
    assert persona.startswith("You act as a security engineer")
    assert "You are a careful verifier for acme/widgets" in persona and "senior software engineer" not in persona
    plan = section(prompt, "PLAN")
    assert plan.splitlines()[:2] == ["Fix a bug with a regression test", "1. Reproduce the bug: a crash on {empty} input"]
    assert prompt.index("## TASK") < prompt.index("## PLAN") < prompt.index("## REPO")


async def test_without_options_the_prompt_has_no_plan(tmp_path):
    prompt = await build_prompt(context(tmp_path), Settings())
    assert "## PLAN" not in prompt and "senior software engineer" in section(prompt, "PERSONA")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"template": "poetry"}, "unknown template 'poetry'; known: coding, conventions, review, security, verify"),
        ({"persona": "pirate"}, "unknown persona 'pirate'; known: "),
        ({"plan_template": "moonshot"}, "unknown plan_template 'moonshot'; known: bugfix, feature"),
        ({"plan_template": "feature", "variables": {"area": "x"}}, "plan template 'feature' needs variables: behaviour"),
    ],
)
def test_bad_options_are_refused_naming_the_choices(options, message):
    with pytest.raises(ValueError) as e:
        check_options(Settings(), options)
    assert str(e.value).startswith(message)
