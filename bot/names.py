"""The rules for names: what the bot accepts from outside, and the branch names it makes.

Owners, repositories, workspace keys and branches become paths and git arguments; agent names
become pool names and container labels; models reach an agent's argv. Every check here is a pure
function, cheap enough for the event loop, and the comment parser, the label route and the
workspaces all use these same ones.
"""

from __future__ import annotations

import hashlib
import re

_OWNER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
_REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Agent names: no slash. Models may carry a namespace ("hf.co/org/m") or an ollama tag
# ("qwen3:8b"). Neither may look like an option.
AGENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,39}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}")
MAX_BRANCH = 200
SLUG_CHARS = 40
# What git refuses anywhere in a ref name (git-check-ref-format(1), rules 3-5 and 8-10).
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{")


def validate_repo(owner: str, repo: str) -> None:
    """Gitea's naming rules as far as paths care: owners start with a letter or digit; repository
    names may start with a dot (``.profile``) but are never ``.``/``..`` and never start with '-'."""
    if not _OWNER.fullmatch(owner):
        raise ValueError(f"invalid owner {owner[:60]!r}: expected 1-40 letters, digits, '.', '_' or '-'")
    if not _REPO.fullmatch(repo) or repo in (".", "..") or repo.startswith("-"):
        raise ValueError(
            f"invalid repository {repo[:60]!r}: expected 1-100 letters, digits, '.', '_' or '-', "
            "not '.', '..' or starting with '-'"
        )


def validate_key(key: str) -> str:
    """A workspace key is one path component chosen by the bot (``issue-3``, ``pr-7``, ...)."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"invalid workspace key {key[:60]!r}")
    return key


def validate_agent(name: str) -> str:
    if not AGENT_NAME.fullmatch(name):
        raise ValueError(
            f"invalid agent name {name[:60]!r}: expected 1-40 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_model(model: str) -> str:
    if not MODEL_NAME.fullmatch(model):
        raise ValueError(
            f"invalid model {model[:60]!r}: expected 1-100 letters, digits, '.', '_', '-', ':' or '/', "
            "starting with a letter or digit"
        )
    return model


def validate_branch(name: str) -> str:
    """Refuse anything git would not take as a branch, or that could act as an option or path trick."""
    reason = _branch_problem(name)
    if reason:
        raise ValueError(f"invalid branch name {name[:80]!r}: {reason}")
    return name


def validate_tag(name: str) -> str:
    """Tags the bot works on obey the same rules as branches: the name reaches git as a ref."""
    reason = _branch_problem(name)
    if reason:
        raise ValueError(f"invalid tag name {name[:80]!r}: {reason}")
    return name


def _branch_problem(name: str) -> str | None:
    """Why ``git check-ref-format --branch`` would refuse the name, without starting git."""
    if not name or len(name) > MAX_BRANCH:
        return f"must be 1-{MAX_BRANCH} characters"
    if name.startswith("-"):
        return "must not start with '-'"
    if name in ("HEAD", "@"):
        return "must not be HEAD or @"
    if _REF_FORBIDDEN.search(name) or any(c.isspace() for c in name):
        return "must not contain whitespace, control characters, '..', '@{' or any of ~^:?*[\\"
    if any(not part or part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return "must not have empty parts or parts starting with '.' or ending with '.lock'"
    if name.endswith("."):
        return "must not end with '.'"
    return None


def branch_key(branch: str, kind: str = "branch") -> str:
    """A workspace key for a run on a branch (or, with ``kind="tag"``, a tag); the hash keeps
    ``a/b`` and ``a-b`` apart, the kind a branch and a tag of one name."""
    validate_branch(branch)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", branch).strip(".-")[:60]
    return f"{kind}-{safe}-{hashlib.sha256(branch.encode()).hexdigest()[:8]}"


def branch_for(task: str, number: int) -> str:
    """``agent/<slug of the task>``; ``agent/issue-N`` when the task has no usable words."""
    return branch_choices(task, number)[0]


def branch_choices(task: str, number: int) -> tuple[str, ...]:
    """The branch for an issue's run, then the one to use when another issue already has it:
    two issues asking for the same task must not push to one branch."""
    slug = re.sub(r"[^a-z0-9]+", "-", task.lower()).strip("-")[:SLUG_CHARS].rstrip("-")
    if not slug:
        return (validate_branch(f"agent/issue-{number}"),)
    return validate_branch(f"agent/{slug}"), validate_branch(f"agent/{slug}-issue-{number}")
