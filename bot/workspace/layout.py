"""Where a workspace's parts live on disk, and the files the bot and the agent exchange there.

Layout under the data directory::

    mirrors/<owner>/<repo>.git              bare mirror, the only clone that talks to the Forge
    workspaces/<owner>/<repo>/<key>/repo/   the agent's clone (self-contained, no alternates)
    workspaces/<owner>/<repo>/<key>/.meta/  prompt, logs, run record
    git/<owner>/<repo>/<key>.git            the bot's own git dir of the clone, never mounted

The agent writes everything under ``workspaces/<owner>/<repo>/<key>/`` (mounted at /workspace),
its ``repo/.git`` included. Host-side git never uses that ``.git``: it works in the bot's git dir,
with the clone as its work tree where one is needed (see ``bot.workspace.handover``).
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

    @property
    def host_git(self) -> Path:
        return host_git_dir(self.root)


def host_git_dir(root: Path) -> Path:
    """The bot's git dir for the workspace at ``root`` (``<data>/workspaces/<owner>/<repo>/<key>``)."""
    owner, repo, key = root.parts[-3:]
    return root.parents[3] / "git" / owner / repo / f"{key}.git"


class WorkspaceDir(NamedTuple):
    """A workspace found on disk, for the sweeper."""

    owner: str
    repo: str
    key: str
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / ".meta"

    @property
    def host_git(self) -> Path:
        return host_git_dir(self.root)
