"""Stage 1, prepare: the run's workspace on its branch, and the prompt written into it.

Nothing here changes the store or starts anything, so a dry run prepares exactly like a run.
"""

from __future__ import annotations

from typing import NamedTuple

from bot.runs import final_message
from bot import workspace as wsmod
from bot.forge.client import Forge, ForgeError
from bot.forge.paths import Repo
from bot.intake.payloads import PullRequest
from bot.forge.permissions import can_write
from bot.report import sentences
from bot.runs.prompt import PromptContext, build_prompt, save_prompt
from bot.settings import Settings
from bot.store import Run
from bot.workspace import Workspace, Workspaces


class Prepared(NamedTuple):
    ws: Workspace
    prompt: str
    head_sha: str  # a pull request's head commit; "" for an issue


async def prepare(forge: Forge, settings: Settings, workspaces: Workspaces, run: Run, *, bot: str) -> Prepared:
    """Clone or reuse the workspace ``run.workspace_key`` on the run's branch and write its prompt.

    ``bot`` is the bot's own login: its comments are not steering and stay out of the prompt.
    """
    paths = Repo(run.owner, run.repo)
    repo = await forge.getitem(paths.path)
    issue = {} if run.on_ref else await forge.getitem(paths.issue(run.number))
    if run.is_pull:
        pull = await forge.getitem(paths.pull(run.number))
        if PullRequest.model_validate(pull).is_fork:
            raise ValueError(sentences.fork_refused(run.number))
        branch, base_branch, new_branch = pull["head"]["ref"], pull["base"]["ref"], False
        head_sha = pull["head"]["sha"]
    else:
        head_sha = ""
        # A tag is no branch to merge into: its PR goes into the default branch, from the tag's commit.
        on_branch = run.on_ref and not run.start_commit
        base_branch = run.options["ref"] if on_branch else repo.get("default_branch") or "main"
        branch = run.branch or wsmod.branch_for(run.task, run.number)
        new_branch = True
    ws = await workspaces.prepare(
        run.owner, run.repo, run.workspace_key, branch, base_branch, new_branch=new_branch, start=run.start_commit
    )
    wsmod.clear_blocked(ws)
    final_message.clear(ws)
    if run.answer:
        wsmod.write_answer(ws, run.answer)
    writers = _Writers(forge, settings, run)
    comments = [] if run.on_ref else await _writers_comments(writers, await forge.getitem(paths.comments(run.number)), bot)
    context = PromptContext(
        task=run.task,
        owner=run.owner,
        repo=run.repo,
        branch=branch,
        number=run.number,
        is_pull=run.is_pull,
        issue_title=issue.get("title", ""),
        issue_body=issue.get("body", "") if issue and await writers.check(issue["user"]["login"]) else "",
        comments=comments,
        answer=run.answer or None,
        review=run.review,
        repo_dir=ws.clone,
        git_dir=ws.host_git,
        options=run.options,
    )
    prompt = await build_prompt(context, settings)
    save_prompt(ws, prompt)
    return Prepared(ws, prompt, head_sha)


async def _writers_comments(writers: _Writers, comments: list[dict], bot: str) -> list[tuple[str, str]]:
    """Recent comments by users with write access: only they may steer the agent."""
    kept = []
    for c in comments[-20:]:
        login = c["user"]["login"]
        if login != bot and await writers.check(login):
            kept.append((login, c.get("body", "")))
    return kept


class _Writers:
    """Write access of the issue's authors, asked once per login while one prompt is built."""

    def __init__(self, forge: Forge, settings: Settings, run: Run) -> None:
        self._forge, self._settings, self._run = forge, settings, run
        self._known: dict[str, bool] = {}

    async def check(self, login: str) -> bool:
        if login not in self._known:
            try:
                run = self._run
                self._known[login] = await can_write(self._forge, self._settings, run.owner, run.repo, login)
            except ForgeError:
                self._known[login] = False  # fail closed: the text stays out of the prompt
        return self._known[login]
