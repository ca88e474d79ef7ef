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

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

WORKSPACES = "workspaces"
CLONE = "repo"
META = ".meta"

# At the top of the agent's clone.
BLOCKED = "BLOCKED.md"  # the agent's question
ANSWER = "ANSWER.md"  # the maintainer's answer, for the agent's next spell

# In .meta/, the bot's unless said otherwise; the bot masks secrets in everything it writes there.
PROMPT = "prompt.md"  # the prompt the agent got, for the record and for debugging
CONTAINER_LOG = "container.log"  # both streams of the agent's container: the failure log tail comes from here
STDOUT_LOG = "stdout.log"  # its stdout alone: some agents end it with their final message
LAST_MESSAGE = "agent-codex.log"  # written by the agent: codex's ``-o`` file, its final message
QA_LOG = "qa.log"  # the QA commands and their output
SWEPT = ".swept"  # the sweeper's mark: deleted on its next pass unless a run came back


def from_clone(name: str) -> str:
    """A file of ``.meta/`` as the agent names it, from its working directory (its clone)."""
    return posixpath.join("..", META, name)


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
        return self.root / CLONE

    @property
    def meta(self) -> Path:
        return self.root / META

    @property
    def host_git(self) -> Path:
        return host_git_dir(self.root)


def host_git_dir(root: Path) -> Path:
    """The bot's git dir for the workspace at ``root`` (``<data>/workspaces/<owner>/<repo>/<key>``)."""
    owner, repo, key = root.parts[-3:]
    return root.parents[3] / "git" / owner / repo / f"{key}.git"


class WorkspaceDir(NamedTuple):
    """Where a workspace is (or would be) on disk, whatever its branch: for the sweeper and the admin API."""

    owner: str
    repo: str
    key: str
    root: Path

    @property
    def meta(self) -> Path:
        return self.root / META

    @property
    def host_git(self) -> Path:
        return host_git_dir(self.root)
