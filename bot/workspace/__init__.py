"""Workspaces: mirrors and clones for the agents, and the host-side harvest once they are done.

The branch names a run works on come from ``bot.names`` and are handed on here with the rest.
"""

from bot.names import branch_choices, branch_for, branch_key, validate_branch

from bot.workspace.blocked import clear_blocked, read_blocked, write_answer
from bot.workspace.clones import Workspaces, parse_ids, recent_commits, remove_workspace
from bot.workspace.files import UnsafeWorkspace, safe_read, safe_write
from bot.workspace.git import GitError
from bot.workspace.handover import TooLarge
from bot.workspace.commits import Commit, check_branch, commit_leftovers, commit_message, commits_since
from bot.workspace.layout import Workspace, WorkspaceDir
from bot.workspace.projects import Project, detect_project, qa_commands

__all__ = [
    "Commit", "GitError", "Project", "TooLarge", "UnsafeWorkspace", "Workspace", "WorkspaceDir", "Workspaces",
    "branch_choices", "branch_for", "branch_key", "check_branch", "clear_blocked", "commit_leftovers",
    "commit_message", "commits_since", "detect_project", "parse_ids", "qa_commands", "read_blocked",
    "recent_commits", "remove_workspace", "safe_read", "safe_write", "validate_branch", "write_answer",
]
