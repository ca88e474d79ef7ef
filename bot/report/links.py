"""Where a run shows on the Forge's web pages: one answer for the dashboard, the admin API and the
status comment, from the run and what the reporter recorded of it."""

from __future__ import annotations

from bot.report.shown import Shown
from bot.store import Run


def links(run: Run, shown: Shown, forge_url: str) -> dict[str, str]:
    """``issue`` (an issue or pull request), or ``branch`` or ``tag`` for a run with no issue
    (number 0); then ``status_comment``, ``pull_request`` and ``review`` once they exist."""
    repo = f"{forge_url.rstrip('/')}/{run.owner}/{run.repo}"
    if run.on_ref:
        kind = run.options.get("ref_type", "branch")
        found = {kind: f"{repo}/src/{kind}/{run.options['ref']}"}
    else:
        found = {"issue": f"{repo}/{'pulls' if run.is_pull else 'issues'}/{run.number}"}
    if shown.comment_url:
        found["status_comment"] = shown.comment_url
    if shown.pull:
        found["pull_request"] = shown.pull.url or f"{repo}/pulls/{shown.pull.number}"
    if shown.review is not None:
        found["review"] = f"{repo}/pulls/{run.number}/files"  # Gitea shows reviews with the changed files
    return found
