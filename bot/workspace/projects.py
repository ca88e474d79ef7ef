"""What kind of project a clone holds, and the QA commands that build and test it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bot.settings import Settings


@dataclass(frozen=True)
class Project:
    language: str
    build: tuple[tuple[str, ...], ...]
    test: tuple[tuple[str, ...], ...]


_GO_TEST = ("go", "test", "./...", "-count=1", "-timeout", "120s")
_PROJECTS = (
    ("go.mod", Project("Go", (("go", "build", "./..."), ("go", "vet", "./...")), (_GO_TEST,))),
    ("composer.json", Project(
        "PHP", (("composer", "install", "--no-interaction"),), (("composer", "test"),)
    )),
    ("package.json", Project("JavaScript/TypeScript", (("npm", "install"),), (("npm", "test"),))),
    ("Cargo.toml", Project("Rust", (("cargo", "build"),), (("cargo", "test"),))),
    ("pyproject.toml", Project("Python", (), (("python", "-m", "pytest"),))),
)


def detect_project(repo_dir: Path) -> Project | None:
    """The first project file found at the top of the clone decides; None when there is none."""
    return next((project for name, project in _PROJECTS if (repo_dir / name).is_file()), None)


def qa_commands(settings: Settings, owner: str, repo: str, repo_dir: Path) -> list[list[str]]:
    """Build then test, unless ``settings.qa["owner/repo"]`` says otherwise (an empty list: no QA)."""
    override = settings.qa.get(f"{owner}/{repo}")
    if override is not None:
        return [list(argv) for argv in override]
    project = detect_project(repo_dir)
    return [list(argv) for argv in project.build + project.test] if project else []
