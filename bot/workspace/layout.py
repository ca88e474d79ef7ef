"""Where a workspace's parts live on disk, and the files the bot and the agent exchange there.

Layout under the data directory::

    mirrors/<owner>/<repo>.git              bare mirror, the only clone that talks to the Forge
    workspaces/<owner>/<repo>/<key>/repo/   the agent's clone (self-contained, no alternates)
    workspaces/<owner>/<repo>/<key>/.meta/  prompt, logs, run record
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

BLOCKED = "BLOCKED.md"  # the agent's question, at the top of its clone
ANSWER = "ANSWER.md"  # the maintainer's answer, for the agent's next spell


@dataclass(frozen=True)
class Workspace:
    owner: str
    repo: str
    key: str
    root: Path
    branch: str
    base_branch: str
    url: str  # the Forge clone URL, without credentials
    start: str = ""  # the commit a new branch starts from, when not the base branch's head (a tag's)

    @property
    def clone(self) -> Path:
        return self.root / "repo"

    @property
    def meta(self) -> Path:
        return self.root / ".meta"


class WorkspaceDir(NamedTuple):
    """A workspace found on disk, for the sweeper."""

    owner: str
    repo: str
    key: str
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / ".meta"
