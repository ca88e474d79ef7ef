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
from bot.runs.prompt import MAX_COMMENTS, PromptContext, build_prompt, save_prompt
from bot.settings import Settings
from bot.store import Run
from bot.workspace import Workspace, Workspaces


class Prepared(NamedTuple):
    ws: Workspace
    prompt: str
    head_sha: str  # a pull request's head commit; "" for an issue
    own_branch: bool = False  # a pull request's run on an agent branch of its own (its head is protected)


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
        head_sha = start = pull["head"]["sha"]
        # The bot never pushes onto the default branch or a protected one: a coding run on a pull
        # request from one works on an agent branch of its own, proposed to the pull's head.
        own_branch = not run.review and (run.options.get("own_branch") or await _protected(forge, paths, repo, branch))
        if own_branch:
            base_branch, new_branch = branch, True
            branch = wsmod.branch_choices(run.task or pull.get("title", ""), run.number)[-1]
    else:
        head_sha, start, own_branch = "", run.start_commit, False
        # A tag is no branch to merge into: its PR goes into the default branch, from the tag's commit.
        on_branch = run.on_ref and not run.start_commit
        base_branch = run.options["ref"] if on_branch else repo.get("default_branch") or "main"
        branch = run.branch or wsmod.branch_for(run.task, run.number)
        new_branch = True
    ws = await workspaces.prepare(
        run.owner, run.repo, run.workspace_key, branch, base_branch, new_branch=new_branch,
        start=start if new_branch else "",
    )
    wsmod.clear_blocked(ws)
    final_message.clear(ws)
    if run.answer:
        wsmod.write_answer(ws, run.answer)
    writers = _Writers(forge, settings, run)
    listed = [] if run.on_ref else await forge.getitem(paths.comments(run.number)) or []  # Gitea lists them all
    comments = await _writers_comments(writers, listed, bot)
    context = PromptContext(
        task=run.task,
        owner=run.owner,
        repo=run.repo,
        branch=branch,
        number=run.number,
        is_pull=run.is_pull,
        issue_title=issue.get("title", ""),
        issue_body=issue.get("body", ""),
        untrusted_author="" if not issue or await writers.check(author := issue["user"]["login"]) else author,
        comments=comments,
        answer=run.answer or None,
        review=run.review,
        repo_dir=ws.clone,
        git_dir=ws.host_git,
        options=run.options,
    )
    prompt = await build_prompt(context, settings)
    save_prompt(ws, prompt)
    return Prepared(ws, prompt, head_sha, bool(own_branch))


async def _protected(forge: Forge, paths: Repo, repo: dict, branch: str) -> bool:
    """The repository's default branch, or one the Forge marks protected."""
    return branch == repo.get("default_branch") or bool((await forge.getitem(paths.branch(branch)) or {}).get("protected"))


async def _writers_comments(writers: _Writers, comments: list[dict], bot: str) -> list[tuple[str, str]]:
    """The latest comments by users with write access, oldest first: only they may steer the agent,
    and they are chosen after the others are left out, so no number of other comments pushes
    theirs out of the prompt."""
    kept: list[tuple[str, str]] = []
    for c in reversed(comments):
        login = c["user"]["login"]
        if login != bot and await writers.check(login):
            kept.insert(0, (login, c.get("body", "")))
            if len(kept) == MAX_COMMENTS:
                break
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
