"""A run's work around the agent: preparing its workspace and prompt, then judging and harvesting.

Outcome rules: a non-empty BLOCKED.md → blocked with its text as the question; a non-zero exit,
an OOM kill, a timeout or a kill → failed with the reason; otherwise QA (coding runs), then the
harvest (commit leftovers, check the branch, push host-side) → completed. Every step re-reads and
conditionally moves the run, so it applies to exactly the run whose container ended, once.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from . import workspace as wsmod
from .agents import resolve
from .executor.docker import DockerExecutor, Exit
from .forge import ForgeError
from .forgepaths import Repo
from .logs import mask, tail
from .permissions import can_write
from .prompt import PromptContext, build_prompt, save_prompt
from .services import Services
from .payloads import PullRequest
from .store import Run
from .workspace import Workspace, Workspaces

if TYPE_CHECKING:
    from .runner import Runner

log = logging.getLogger(__name__)

async def prepare(services: Services, workspaces: Workspaces, run: Run) -> tuple[Workspace, str, str]:
    """Clone or reuse the run's workspace on its branch and write its prompt.

    Returns the workspace, the prompt and, for a pull request, its head commit. Nothing here
    changes the store or starts anything, so a dry run can call it too.
    """
    forge = services.forge
    paths = Repo(run.owner, run.repo)
    repo = await forge.getitem(paths.path)
    issue = await forge.getitem(paths.issue(run.number))
    if run.is_pull:
        pull = await forge.getitem(paths.pull(run.number))
        if PullRequest.model_validate(pull).is_fork:
            raise ValueError(f"pull request #{run.number} comes from a fork; the bot only pushes to this repository")
        branch, base_branch, new_branch = pull["head"]["ref"], pull["base"]["ref"], False
        head_sha = pull["head"]["sha"]
    else:
        head_sha = ""
        base_branch = repo.get("default_branch") or "main"
        branch = run.branch or wsmod.branch_for(run.task, run.number)
        new_branch = True
    ws = await workspaces.prepare(run.owner, run.repo, run.workspace_key, branch, base_branch, new_branch=new_branch)
    wsmod.clear_blocked(ws)
    if run.answer:
        wsmod.write_answer(ws, run.answer)
    writers = _Writers(services, run)
    comments = await _writers_comments(services, writers, await forge.getitem(paths.comments(run.number)))
    context = PromptContext(
        task=run.task,
        owner=run.owner,
        repo=run.repo,
        branch=branch,
        number=run.number,
        is_pull=run.is_pull,
        issue_title=issue.get("title", ""),
        issue_body=issue.get("body", "") if await writers.check(issue["user"]["login"]) else "",
        comments=comments,
        answer=run.answer or None,
        review=run.review,
        repo_dir=ws.clone,
    )
    prompt = await build_prompt(context, services.settings)
    save_prompt(ws, prompt)
    return ws, prompt, head_sha


async def _writers_comments(services: Services, writers: _Writers, comments: list[dict]) -> list[tuple[str, str]]:
    """Recent comments by users with write access: only they may steer the agent."""
    bot = await services.bot_login()
    kept = []
    for c in comments[-20:]:
        login = c["user"]["login"]
        if login != bot and await writers.check(login):
            kept.append((login, c.get("body", "")))
    return kept


class _Writers:
    """Write access of the issue's authors, asked once per login while one prompt is built."""

    def __init__(self, services: Services, run: Run) -> None:
        self._services, self._run = services, run
        self._known: dict[str, bool] = {}

    async def check(self, login: str) -> bool:
        if login not in self._known:
            try:
                s, run = self._services, self._run
                self._known[login] = await can_write(s.forge, s.settings, run.owner, run.repo, login)
            except ForgeError:
                self._known[login] = False  # fail closed: the text stays out of the prompt
        return self._known[login]


async def collect_logs(executor: DockerExecutor, run: Run, ws: Workspace, settings) -> None:
    """Keep the agent's output in ``.meta/`` (capped, secrets masked) before the container goes."""
    secrets = settings.secrets()
    limit = settings.limits.log_bytes
    both = mask((await executor.logs(run.container_id, limit=limit)).decode(errors="replace"), secrets)
    out = mask((await executor.logs(run.container_id, stderr=False, limit=limit)).decode(errors="replace"), secrets)
    path = ws.meta / f"agent-{run.agent}.log"
    existing = mask(wsmod.safe_read(path, limit) or "", secrets)  # codex writes its last message here itself
    wsmod.safe_write(path, f"{existing}\n--- container output ---\n{both}" if existing else both)
    wsmod.safe_write(ws.meta / "stdout.log", out)


async def finish(runner: Runner, run: Run, ws: Workspace, exit: Exit) -> None:
    """Judge the agent's exit and move the run on; a cancelled run stays cancelled."""
    store = runner.services.store
    settings = runner.settings
    current = await store.get(run.id)
    if current is None or current.state != "running" or current.container_id != run.container_id:
        return
    started = run.started_at or time.time()
    reason = _failure(exit, settings.limits.timeout)
    quick = bool(reason) and not exit.timed_out and time.time() - started < settings.backoff.window
    until = await store.record_outcome(
        run.pool, quick_failure=quick, threshold=settings.backoff.failures, pause=settings.backoff.pause
    )
    if until:
        log.warning("pool %s paused until %s after %d quick failures", run.pool, time.ctime(until), settings.backoff.failures)
    log_tail = tail(wsmod.safe_read(ws.meta / f"agent-{run.agent}.log", settings.limits.log_bytes * 2) or "")
    if reason:
        await store.transition(run.id, "failed", reason=reason, expect=("running",), exit_code=exit.code,
                               result={"log_tail": log_tail})
        return
    question = wsmod.read_blocked(ws)
    if question:
        await store.transition(run.id, "blocked", reason="the agent asked a question", expect=("running",),
                               exit_code=exit.code, question=question)
        return
    run = await store.update(run.id, exit_code=exit.code, result={"log_tail": log_tail})
    await after_agent(runner, run, ws)


def _failure(exit: Exit, timeout: float) -> str:
    if exit.timed_out:
        return f"the agent ran past its {timeout:g}s limit and was stopped"
    if exit.oom_killed:
        return "the agent ran out of memory and was killed"
    if exit.killed:
        return "the agent was killed"
    if exit.code is None:
        return exit.error or "the agent's container vanished"
    if exit.code != 0:
        return f"the agent exited with code {exit.code}"
    return ""


async def after_agent(runner: Runner, run: Run, ws: Workspace) -> None:
    """QA for coding runs, then the harvest; resumable from ``qa`` or ``harvesting``."""
    store = runner.services.store
    if run.review:
        review = wsmod.safe_read(ws.meta / "stdout.log", runner.settings.limits.log_bytes) or ""
        await store.transition(run.id, "completed", expect=("running", "harvesting"),
                               result={**run.result, "review": review})
        return
    if run.state == "running":
        run = await store.transition(run.id, "qa", expect=("running",))
        if run is None:
            return
    if run.state == "qa":
        runner.services.wake_reporter()
        failure = await run_qa(runner, run, ws)
        if failure:
            await store.transition(run.id, "failed", reason=failure[0], expect=("qa",),
                                   result={**run.result, "qa_log": failure[1]})
            return
        run = await store.transition(run.id, "harvesting", expect=("qa",))
        if run is None:
            return
    await harvest(runner, run, ws)


async def run_qa(runner: Runner, run: Run, ws: Workspace) -> tuple[str, str] | None:
    """Run the repo's QA commands in the agent's sandbox; (reason, output) of the first failure."""
    settings = runner.settings
    agent = resolve(settings, run.agent_spec)
    output: list[str] = []
    for index, argv in enumerate(wsmod.qa_commands(settings, run.owner, run.repo, ws.clone)):
        spec = runner.container_spec(run, agent, ws, argv, role=f"qa{index}")
        container = await runner.executor.start(spec)
        try:
            exit = await runner.executor.wait(container, time.time() + settings.limits.timeout, settings.limits.grace)
            text = (await runner.executor.logs(container, limit=settings.limits.log_bytes)).decode(errors="replace")
        finally:
            await runner.executor.remove(container)
        text = mask(text, settings.secrets())
        output.append(f"$ {' '.join(argv)}\n{text}")
        wsmod.safe_write(ws.meta / "qa.log", "\n".join(output))
        if exit.code != 0 or exit.timed_out or exit.oom_killed:
            reason = _failure(exit, settings.limits.timeout) or "failed"
            return f"QA failed: `{' '.join(argv)}`: {reason}", tail(text)
    return None


async def harvest(runner: Runner, run: Run, ws: Workspace) -> None:
    """Commit what the agent left, check the branch, push host-side, and record what happened."""
    settings = runner.settings
    store = runner.services.store
    await wsmod.commit_leftovers(ws, wsmod.commit_message(run.task), settings.git)
    base = await runner.workspaces.base_commit(ws)
    commits = [f"{c.sha[:10]} {c.subject}" for c in await wsmod.commits_since(ws, base)]
    result = {**run.result, "branch": ws.branch, "base": ws.base_branch, "commits": commits}
    if not commits:
        await store.transition(run.id, "completed", expect=("harvesting",), result=result | {"pushed": False})
        return
    violations = await wsmod.check_branch(ws, base, settings.protected_paths, settings.max_file_bytes)
    if violations:
        await store.transition(run.id, "failed", reason="the agent's changes break the branch rules",
                               expect=("harvesting",), result=result | {"violations": violations})
        return
    head = await runner.workspaces.push(ws, ws.branch)
    await store.transition(run.id, "completed", expect=("harvesting",),
                           result=result | {"pushed": True}, head_sha=head)
