"""What an operator can do to the bot, whatever the face: the admin API, the CLI (through the API), MCP.

Plain async functions over the shared parts (``Services``: store, settings, Forge, executor,
workspaces); only ``poke`` is handed the runner, to drain the queue now. Inputs and outputs are
pydantic models, so each face validates and serialises the same way; a refusal is an
``OperationError`` with the HTTP status it maps to and a one-line reason.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot import workspace as wsmod
from bot.runs.agents import UnknownAgent, known_agents, resolve, run_request
from bot.runs.dryrun import dry_run
from bot.services import Services
from bot.executor.docker import ExecutorError
from bot.forge.client import ForgeError
from bot.forge.paths import Repo
from bot.report.links import links
from bot.report.shown import shown
from bot.admin.usage import UsageView
from bot.logs import mask
from bot.intake.payloads import PullRequest
from bot.store.pools import PoolsView, pools_view
from bot.admin.replicas import ReplicasView, replicas_view
from bot.runs.prompt import check_options
from bot.runs.runner import Runner
from bot.report import sentences
from bot.store import LIVE, RETRYABLE, STATES, Run, RunRequest, Usage
from bot.workspace import layout

API_USER = "api"  # requested_by of runs started through the API
API_TRIGGER = "api"


class OperationError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


# What an operation's Forge or git work may raise besides a refusal; ``refusal`` says how to answer.
FAILURES = (ForgeError, wsmod.GitError, wsmod.UnsafeWorkspace, ValueError)


def refusal(e: Exception) -> OperationError:
    """The answer for one of ``FAILURES``: the Forge's 404 stays 404, its other failures and git's are
    502 (the bot's upstream failed), a bad value is 400; the reason is one line."""
    reason = (str(e).splitlines() or [type(e).__name__])[0]  # git's stderr may run over several lines
    if isinstance(e, ForgeError):
        return OperationError(404 if e.status == 404 else 502, f"the Forge failed: {reason}")
    if isinstance(e, (wsmod.GitError, wsmod.UnsafeWorkspace)):
        return OperationError(502, f"could not prepare the workspace: {reason}")
    return OperationError(400, reason)


class DispatchInput(BaseModel):
    """Hand a task to a coding agent, as upstream's ``agentic_dispatch`` took it."""

    model_config = ConfigDict(extra="forbid")

    repo: str = Field(description="repository name, or owner/name")
    org: str | None = Field(None, description="owner of the repository, when repo is a bare name")
    task: str = Field("", description="what the agent should do (default: the issue's title)")
    agent: str = Field("codex", description="agent[:model], e.g. codex, claude:opus")
    template: str | None = Field(None, description="main prompt template: coding, review, verify, ...")
    plan_template: str | None = Field(None, description="a plan template whose {{var}} come from variables")
    variables: dict[str, str] = Field(default_factory=dict, description="values for templates and plans")
    persona: str | None = Field(None, description="a persona the agent takes on")
    issue: int | None = Field(None, description="issue number to work on", ge=1)
    pr: int | None = Field(None, description="pull request number to work on", ge=1)
    branch: str | None = Field(None, description="a branch to work on when there is no issue")
    tag: str | None = Field(None, description="a tag to work on when there is no issue")
    dry_run: bool = Field(False, description="return the prompt and argv; start nothing")

    def owner_and_name(self) -> tuple[str, str]:
        owner, _, name = self.repo.rpartition("/")
        owner = owner or self.org or ""
        if not owner or not name or "/" in owner:
            raise OperationError(400, f"repo {self.repo!r} needs an owner: give owner/name or org")
        return owner, name

    def options(self) -> dict[str, Any]:
        """What reaches the prompt, without the unset ones."""
        options = {
            "template": self.template, "plan_template": self.plan_template,
            "persona": self.persona, "variables": self.variables,
        }
        return {k: v for k, v in options.items() if v}


class DispatchOutput(BaseModel):
    """Upstream's answer, plus the run the bot queued and its state."""

    success: bool
    agent: str
    repo: str
    workspace_dir: str | None = None
    prompt: str | None = None
    pid: int | None = None  # no host process: the agent runs in a container (see run_id)
    output_file: str | None = None
    run_id: int | None = None
    state: str | None = None
    argv: list[str] | None = None
    message: str = ""


class RunSummary(BaseModel):
    id: int
    repo: str
    number: int
    is_pull: bool
    agent: str
    state: str
    reason: str
    task: str
    requested_by: str
    trigger: str
    branch: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    usage: UsageView | None = None  # what its model calls used; listed and shown runs have it

    @classmethod
    def of(cls, run: Run, usage: Usage | None = None) -> RunSummary:
        data = {name: getattr(run, name) for name in cls.model_fields if name not in ("repo", "agent", "usage")}
        return cls(**data, repo=f"{run.owner}/{run.repo}", agent=run.agent_spec,
                   usage=UsageView.of(usage) if usage is not None else None)


class StateChangeView(BaseModel):
    """A line of a run's history, as the API shows it."""

    from_state: str | None
    to_state: str
    reason: str


class Egress(BaseModel):
    """What the run's containers could reach (see the README's network section)."""

    mode: str = ""  # "gateway" or "open"; "" for a run that never started a container
    credentials_inside: bool = False
    blocked: dict[str, int] = {}  # host:port -> connections the proxy refused
    upstream: str = ""  # why the gateway could not reach the model API, if it could not


class RunDetail(RunSummary):
    question: str
    answer: str
    transitions: list[StateChangeView]
    links: dict[str, str]
    log_tail: str
    egress: Egress


# Runs ---------------------------------------------------------------------------------------


async def list_runs(
    services: Services, *, state: str | None = None, repo: str | None = None, agent: str | None = None
) -> list[RunSummary]:
    """Runs, newest first; ``state`` may be a state or ``live`` (queued or working)."""
    if state is not None and state != "live" and state not in STATES:
        raise OperationError(400, f"unknown state {state!r}; known: live, {', '.join(STATES)}")
    states = LIVE if state == "live" else (state,) if state else None
    owner, name = (repo.split("/", 1) if "/" in repo else (None, repo)) if repo else (None, None)
    runs = await services.store.runs(states=states, owner=owner, repo=name)
    if agent:
        runs = [r for r in runs if agent in (r.agent, r.agent_spec)]
    used = await services.store.usages([r.id for r in runs])
    return [RunSummary.of(r, used.get(r.id, Usage())) for r in reversed(runs)]


async def _run(services: Services, run_id: int) -> Run:
    run = await services.store.get(run_id)
    if run is None:
        raise OperationError(404, f"no run {run_id}")
    return run


async def show_run(services: Services, run_id: int) -> RunDetail:
    run = await _run(services, run_id)
    store = services.store
    transitions = [
        StateChangeView(from_state=c.from_state, to_state=c.to_state, reason=c.reason) for c in await store.history(run.id)
    ]
    return RunDetail(
        **dict(RunSummary.of(run, await store.usage(run.id))), question=run.question, answer=run.answer, transitions=transitions,
        links=links(run, await shown(store, run.id), services.settings.forge_url), log_tail=await log_tail(services, run),
        egress=Egress.model_validate(run.result.egress),
    )


async def log_tail(services: Services, run: Run) -> str:
    """The agent's output: live from its container while it runs, else what ``.meta/`` kept."""
    settings = services.settings
    limit = min(settings.limits.log_bytes, 64 * 1024)
    if run.state == "running" and run.container_id:
        try:
            raw = await services.executor.logs(run.container_id, limit=limit)
            return mask(raw.decode(errors="replace"), settings.secrets())
        except ExecutorError:
            pass  # gone meanwhile: its logs are in .meta by now
    path = _output_file(services, run)
    return (wsmod.safe_read(path, limit) or "") if path.parent.is_dir() else ""


def _workspace_dir(services: Services, run: Run) -> Path:
    return services.workspaces.directory(run.owner, run.repo, run.workspace_key).root


def _output_file(services: Services, run: Run) -> Path:
    """Where the agent stage keeps the container's output, once the container ended."""
    return services.workspaces.directory(run.owner, run.repo, run.workspace_key).meta / layout.CONTAINER_LOG


async def cancel_run(services: Services, run_id: int) -> RunSummary:
    run = await _run(services, run_id)
    done = await services.store.transition(run.id, "cancelled", reason="cancelled through the admin API")
    if done is None:
        raise OperationError(409, f"run {run_id} is {run.state}; only queued, working or blocked runs can be cancelled")
    return RunSummary.of(done)


async def retry_run(services: Services, run_id: int) -> RunSummary:
    """Run a failed or cancelled run again, as ``/retry`` would; returns the new run."""
    run = await _run(services, run_id)
    if run.state not in RETRYABLE:
        raise OperationError(409, f"run {run_id} is {run.state}; only failed or cancelled runs can be retried")
    request = run.again(trigger=API_TRIGGER, requested_by=API_USER)
    # One retry per run: a re-sent POST finds the trigger taken and queues nothing.
    retried = await services.store.request_run(request, trigger_key=f"api:retry:{run.id}")
    if retried is None:
        same = await services.store.runs(owner=run.owner, repo=run.repo, number=run.number)
        later = [r.id for r in same if r.retry_of == run.id]
        raise OperationError(409, f"run {run_id} was already retried" + (f" as run {later[0]}" if later else ""))
    return RunSummary.of(retried)


async def answer_run(services: Services, run_id: int, text: str) -> RunSummary:
    """Answer a blocked run's question; it resumes in the same workspace, as after ``/answer``."""
    if not text.strip():
        raise OperationError(400, "the answer is empty")
    run = await _run(services, run_id)
    resumed = await services.store.transition(
        run.id, "queued", reason="answered through the admin API", expect=("blocked",), answer=text
    )
    if resumed is None:
        raise OperationError(409, f"run {run_id} is {run.state}; only a blocked run can be answered")
    return RunSummary.of(resumed)


async def _queue(services: Services, request: RunRequest) -> Run:
    run = await services.store.request_run(request, trigger_key=f"api:{uuid.uuid4()}")
    assert run is not None  # a fresh trigger key is never seen before
    return run


# Pools --------------------------------------------------------------------------------------


async def pools(services: Services) -> PoolsView:
    """Every pool configured, recorded or holding runs: limits, load, frozen and backoff."""
    return await pools_view(services.settings, services.store)


async def freeze(services: Services, frozen: bool, pool: str | None = None) -> PoolsView:
    """Freeze (or thaw) the whole bot or one pool; kept in the store, so it outlives a restart.
    Requests keep being queued while frozen; nothing starts."""
    if pool is not None and not pool.strip():
        raise OperationError(400, "the pool name is empty")
    if pool is not None and pool not in (known := await _known_pools(services)):
        raise OperationError(400, f"unknown pool {pool!r}; known pools: {', '.join(known)}")
    if pool is None:  # a store write: the runner wakes on it
        await services.store.set_flag("frozen", "1" if frozen else "0")
    else:
        await services.store.set_pool_frozen(pool, frozen)
    return await pools(services)


async def _known_pools(services: Services) -> list[str]:
    """The pools configured, recorded, holding runs or named by an agent: what may be frozen."""
    settings = services.settings
    agents = {resolve(settings, name).pool for name in known_agents(settings)}
    return sorted(agents | {p.name for p in (await pools(services)).pools})


async def replicas(services: Services) -> ReplicasView:
    """Every replica sharing the store: host, last heartbeat, alive or lost, its limit, its runs."""
    return await replicas_view(services.settings, services.store, services.replica)


async def poke(runner: Runner) -> list[RunSummary]:
    """Drain the queue now instead of at the next wake-up; returns the runs it started."""
    return [RunSummary.of(r) for r in await runner.drain()]


# Dispatch -----------------------------------------------------------------------------------


async def dispatch(services: Services, inp: DispatchInput) -> DispatchOutput:
    """Queue a run on an issue or pull request, as the ``/dispatch`` command would, on behalf of
    the operator (no permission check: the API is the operator's), or on a branch or tag with no
    issue; or, with ``dry_run``, return the prompt and argv it would get and start nothing."""
    settings = services.settings
    owner, name = inp.owner_and_name()
    try:
        agent = resolve(settings, inp.agent)
    except UnknownAgent:
        raise OperationError(400, f"unknown agent {inp.agent!r}; known: {', '.join(known_agents(settings))}") from None
    except ValueError as e:
        raise OperationError(400, f"invalid agent {inp.agent!r}: {e}") from None
    options = inp.options()
    try:
        check_options(settings, options)
    except ValueError as e:
        raise OperationError(400, str(e)) from None
    if (inp.issue is not None) + (inp.pr is not None) + (inp.branch is not None) + (inp.tag is not None) != 1:
        raise OperationError(400, "give exactly one of issue, pr, branch or tag")
    if inp.branch is not None or inp.tag is not None:  # no issue: number 0, the ref and its commit kept
        if not inp.task.strip():
            raise OperationError(400, f"a dispatch on a {'branch' if inp.branch is not None else 'tag'} needs a task")
        if inp.branch is not None:
            options |= {"ref": inp.branch, "ref_sha": await _branch_head(services, owner, name, inp.branch)}
        else:
            options |= {"ref": inp.tag, "ref_sha": await _tag_commit(services, owner, name, inp.tag), "ref_type": "tag"}
        number, title, pull = 0, "", None  # 0: runs need a number; Run.on_ref tells
    else:
        number = inp.issue or inp.pr
        title, pull = await _target(services, owner, name, number, want_pull=inp.pr is not None)
    request = run_request(
        inp.agent, agent, owner=owner, repo=name, number=number, is_pull=pull is not None,
        task=inp.task or title, trigger=API_TRIGGER, requested_by=API_USER, options=options,
    )
    out = DispatchOutput(success=True, agent=agent.name, repo=f"{owner}/{name}")
    if inp.dry_run:
        try:
            argv, prompt = await dry_run(
                services.forge, settings, services.workspaces, request, bot=await services.bot_login()
            )
        except FAILURES as e:
            raise refusal(e) from None
        return out.model_copy(update={"prompt": prompt, "argv": argv, "message": "dry run: nothing was started"})
    if pull is not None and pull.is_fork:
        raise OperationError(409, sentences.fork_refused(number))
    run = await _queue(services, request)
    return out.model_copy(update={
        "run_id": run.id, "state": run.state, "workspace_dir": str(_workspace_dir(services, run)),
        "output_file": str(_output_file(services, run)),
        "message": f"queued run {run.id}",
    })


async def _branch_head(services: Services, owner: str, name: str, branch: str) -> str:
    """The commit the branch points at now: the run's commit status goes on it."""
    try:
        wsmod.validate_branch(branch)
        answer = await services.forge.getitem(Repo(owner, name).branch(branch))
    except ValueError as e:
        raise OperationError(400, str(e)) from None
    except ForgeError as e:
        if e.status == 404:
            raise OperationError(404, f"branch {branch!r} not found in {owner}/{name}") from None
        raise OperationError(502, f"the Forge failed: {e}") from None
    return answer["commit"]["id"]


async def _tag_commit(services: Services, owner: str, name: str, tag: str) -> str:
    """The tag's commit, read from the bot's mirror of the repository: the agent's branch starts
    there and the run's commit status goes on it."""
    try:
        sha = await services.workspaces.tag_commit(owner, name, tag)
    except ValueError as e:
        raise OperationError(400, str(e)) from None
    except wsmod.GitError as e:
        reason = str(e).splitlines()[0]  # git's stderr may run over several lines
        raise OperationError(502, f"could not fetch {owner}/{name} from the Forge: {reason}") from None
    if sha is None:
        raise OperationError(400, f"tag {tag!r} not found in {owner}/{name}")
    return sha


async def _target(
    services: Services, owner: str, name: str, number: int, *, want_pull: bool
) -> tuple[str, PullRequest | None]:
    """The issue's title, and the pull request when it is one."""
    forge = services.forge
    paths = Repo(owner, name)
    try:
        issue = await forge.getitem(paths.issue(number))
        is_pull = issue.get("pull_request") is not None
        if want_pull != is_pull:
            kind = "a pull request" if is_pull else "an issue"
            raise OperationError(400, f"{owner}/{name}#{number} is {kind}; use {'pr' if is_pull else 'issue'}")
        pull = PullRequest.model_validate(await forge.getitem(paths.pull(number))) if is_pull else None
    except ForgeError as e:
        if e.status == 404:
            raise OperationError(404, f"{owner}/{name}#{number} not found on the Forge") from None
        raise OperationError(502, f"the Forge failed: {e}") from None
    return issue.get("title", ""), pull
