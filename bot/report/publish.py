"""What a finished run leaves on the Forge: a pull request, a review, a commit status.

Creating is never blindly repeated: each function looks for what an earlier, perhaps timed-out,
attempt may have made (an open PR for the branch, a review carrying the run's marker) first.
"""

from __future__ import annotations

import re

from bot.report import sentences
from bot.forge.client import Forge, ForgeError
from bot.forge.paths import Repo
from bot.store import Run, Usage

# ``path:line: message`` as review agents print it (optionally with a column).
FINDING_RE = re.compile(r"^\s*(?:[-*]\s+)?`?(?P<path>[\w./@+-][^\s:`]*)`?:(?P<line>\d+)(?::\d+)?:\s*(?P<msg>\S.*)$")

STATUS = {
    "queued": ("pending", "queued"),
    "preparing": ("pending", "preparing the workspace"),
    "running": ("pending", "the agent is working"),
    "qa": ("pending", "checking the changes"),
    "harvesting": ("pending", "collecting the changes"),
    "completed": ("success", "the agent finished"),
    "failed": ("failure", "the run failed"),
    "blocked": ("error", "the agent asked a question"),
    "cancelled": ("error", "cancelled"),
}


def _repo(run: Run) -> Repo:
    return Repo(run.owner, run.repo)


async def open_pull(forge: Forge, run: Run, run_url: str, usage: Usage) -> dict:
    """The open PR for the run's branch: an existing one, or a new one that closes the issue; its
    footer says what the run's model calls used."""
    branch = run.result.branch or run.branch
    existing = await find_pull(forge, run, branch)
    if existing:
        return existing
    if run.options.get("own_branch"):  # proposed to a pull request's protected head: it closes nothing
        about, closes = f"pull request #{run.number} (requested by @{run.requested_by})", f"Run: {run_url}"
    elif not run.on_ref:
        about, closes = f"#{run.number} (requested by @{run.requested_by})", f"Run: {run_url}\n\nCloses #{run.number}"
    else:  # a branch or tag without an issue, dispatched through the admin API
        ref = f"{'tag ' if run.start_commit else ''}`{run.options['ref']}`"
        about, closes = f"{ref} (started through the admin API)", f"Task: {run.task}"
    footer = f"{line}\n\n" if (line := sentences.usage_line(usage)) else ""
    body = (
        f"The agent `{run.agent_spec}` worked on {about}.\n\n"
        f"{_summary(run)}{_commit_list(run)}\n\n{closes}\n\n{footer}{sentences.marker('pull', str(run.id))}"
    )
    data = {"head": branch, "base": run.result.base or run.base_branch, "title": pull_title(run), "body": body}
    try:
        return await forge.post(_repo(run).pulls(), data)
    except ForgeError as e:
        if e.status != 409:  # 409: an open PR for this branch exists already
            raise
    found = await find_pull(forge, run, branch)
    if not found:
        raise ForgeError("POST", _repo(run).pulls(), 409, "a pull request exists but cannot be found")
    return found


async def find_pull(forge: Forge, run: Run, branch: str) -> dict | None:
    async for pull in forge.getiter(_repo(run).pulls(), params={"state": "open"}):
        if pull["head"]["ref"] == branch and pull["head"].get("repo_id") == pull["base"].get("repo_id"):
            return pull
    return None


def pull_title(run: Run) -> str:
    task = run.task.strip().splitlines()[0] if run.task.strip() else f"work on #{run.number}"
    return f"[agent/{run.agent}] {task}"[:255]


def _summary(run: Run) -> str:
    text = run.result.summary
    return f"{sentences.summary(text)}\n\n" if text else ""


def _commit_list(run: Run) -> str:
    commits = run.result.commits
    return "Commits:\n" + sentences.fenced("\n".join(commits[:30])) if commits else ""  # subjects are the agent's


def parse_findings(output: str, changed: set[str]) -> tuple[list[dict], list[str]]:
    """Split review output into inline comments (on changed files) and the remaining lines."""
    comments, rest = [], []
    for line in output.splitlines():
        match = FINDING_RE.match(line)
        path = match and match["path"].removeprefix("./")
        if match and path in changed and int(match["line"]) > 0:
            comments.append({"path": path, "body": sentences.plain(match["msg"]), "new_position": int(match["line"])})
        else:
            rest.append(line)
    return comments, rest


async def post_review(forge: Forge, run: Run, bot: str) -> dict:
    """One COMMENT review from the agent's output, with inline comments where they fit; one posted
    before by an attempt whose answer was lost is found by its marker, among ``bot``'s reviews only."""
    marker = sentences.marker("review", str(run.id))
    repo = _repo(run)
    for review in await forge.getitem(repo.reviews(run.number)) or []:
        if marker in (review.get("body") or "") and (review.get("user") or {}).get("login") == bot:
            return review
    changed = {f["filename"] async for f in forge.getiter(repo.pull_files(run.number))}
    comments, rest = parse_findings(run.result.review, changed)
    text = "\n".join(rest).strip()[:60000]
    remarks = sentences.fenced(text) if text else "(no general remarks)"  # the agent's: shown, never rendered
    body = f"**Review by `{run.agent_spec}`** (run {run.id})\n\n{remarks}\n\n{marker}"
    data: dict = {"event": "COMMENT", "body": body, "comments": comments}
    return await forge.post(repo.reviews(run.number), data)


async def set_status(forge: Forge, run: Run, sha: str, run_url: str) -> None:
    """Set the run's commit status, unless an earlier (timed-out) attempt already did."""
    state, description = STATUS[run.state]
    if run.state == "failed" and run.reason:
        description = run.reason
    description = description[:140]
    context = f"dispatchbot/{run.agent}"
    combined = await forge.getitem(_repo(run).combined_status(sha))
    for status in (combined or {}).get("statuses") or []:
        if status["context"] == context and (status["status"], status["description"]) == (state, description):
            return
    await forge.post(
        _repo(run).statuses(sha),
        {"state": state, "context": context, "description": description, "target_url": run_url},
    )
