"""What the store holds, as plain values: the run state machine, runs, pools and outbox items.

Nothing here knows SQL: every backend turns its rows into these, and callers see only these.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

from bot.names import branch_key

ACTIVE = ("preparing", "running", "qa", "harvesting")
WAITING = ("queued",)
LIVE = WAITING + ACTIVE
TERMINAL = ("completed", "failed", "blocked", "cancelled")
STATES = LIVE + TERMINAL

# Allowed transitions of the run state machine (blocked → queued is `/answer`); each is one transaction.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "queued": ("preparing", "cancelled", "failed"),
    "preparing": ("running", "queued", "failed", "cancelled", "completed"),
    "running": ("qa", "harvesting", "completed", "failed", "blocked", "cancelled"),
    "qa": ("harvesting", "failed", "cancelled"),
    "harvesting": ("completed", "failed", "cancelled"),
    "blocked": ("queued", "cancelled"),
    "completed": (),
    "failed": (),
    "cancelled": (),
}

# Named sets of states, read off the table above; each rule is stated here once.
CANCELLABLE = tuple(s for s, nexts in TRANSITIONS.items() if "cancelled" in nexts)  # live or blocked
RETRYABLE = tuple(s for s in TERMINAL if not TRANSITIONS[s] and s != "completed")  # failed, cancelled
AT_WORK = ("running", *(s for s in TRANSITIONS["running"] if s in ACTIVE))  # the agent's time: the stopwatch runs


def on_ref(options: Mapping[str, Any]) -> bool:
    """Whether a run is on a branch or tag with no issue (an admin API dispatch): its options name the ref."""
    return "ref" in options


class _Target:
    """What a request and its run share about where they work."""

    options: dict[str, Any]

    @property
    def on_ref(self) -> bool:
        """On a branch or tag, with no issue (an admin API dispatch): no issue text, no comments."""
        return on_ref(self.options)


@dataclass(frozen=True)
class RunResult:
    """What a run produced, written by its stages; kept as JSON in the run's ``result`` column. Every
    field has a default, so rows written before a field existed (or pruned of it) still load."""

    log_tail: str = ""  # the end of the agent's output (judge); pruned with the workspace
    summary: str = ""  # the agent's final message (judge)
    review: str = ""  # a review's findings (the review's stdout)
    qa_log: str = ""  # the failed QA command's output; pruned with the workspace
    branch: str = ""  # the branch harvested and its base (harvest)
    base: str = ""
    commits: list[str] = field(default_factory=list)  # "<sha> <subject>", oldest first
    pushed: bool = False
    violations: list[str] = field(default_factory=list)  # the branch rules the changes broke
    # what its containers could reach and were refused (the gateway): mode, credentials_inside,
    # blocked {"host:port": count}, upstream (why the model API could not be reached)
    egress: dict[str, Any] = field(default_factory=dict)
    # set while its harvest is under way: found on a run adopted after a restart, it means the bot
    # died in that harvest (a harvest it could not bear), so it is not tried again
    harvest_under_way: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


@dataclass(frozen=True)
class RunRequest(_Target):
    """What a handler asks for; the store turns it into a queued run."""

    owner: str
    repo: str
    number: int
    is_pull: bool
    agent: str
    model: str
    pool: str
    review: bool
    task: str
    trigger: str
    requested_by: str
    comment_id: int | None = None
    retry_of: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # what an admin API dispatch asked for

    @property
    def workspace_key(self) -> str:
        if self.on_ref:  # one workspace per ref
            return branch_key(self.options["ref"], self.options.get("ref_type", "branch"))
        return f"{'pr' if self.is_pull else 'issue'}-{self.number}"


@dataclass(frozen=True)
class Run(_Target):
    id: int
    owner: str
    repo: str
    number: int
    is_pull: bool
    agent: str
    model: str
    pool: str
    review: bool
    task: str
    trigger: str
    requested_by: str
    comment_id: int | None
    state: str
    reason: str
    question: str
    answer: str
    attempts: int
    workspace_key: str
    branch: str
    base_branch: str
    head_sha: str
    container_id: str
    exit_code: int | None
    result: RunResult
    retry_of: int | None
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None
    version: int
    options: dict[str, Any] = field(default_factory=dict)
    replica: str = ""  # the replica that claimed the run: its workspace and containers are there

    @property
    def agent_spec(self) -> str:
        return f"{self.agent}:{self.model}" if self.model else self.agent

    @property
    def start_commit(self) -> str:
        """The commit a new branch starts from when it is not its base branch's head: a tag's,
        for a dispatch on a tag (its pull request goes into the default branch)."""
        return self.options["ref_sha"] if self.options.get("ref_type") == "tag" else ""

    def again(self, *, trigger: str, requested_by: str, comment_id: int | None = None) -> RunRequest:
        """The request that runs this failed or cancelled run again (``/retry``, the admin API): the
        same agent, model, pool, task and options, in the same workspace."""
        return RunRequest(
            owner=self.owner, repo=self.repo, number=self.number, is_pull=self.is_pull, agent=self.agent,
            model=self.model, pool=self.pool, review=self.review, task=self.task, trigger=trigger,
            requested_by=requested_by, comment_id=comment_id, retry_of=self.id, options=self.options,
        )

    @classmethod
    def draft(cls, req: RunRequest) -> Run:
        """A run that is never stored, for dry runs."""
        now = time.time()
        return cls(
            **req.__dict__, id=0, state="queued", reason="", question="", answer="", attempts=0,
            workspace_key=req.workspace_key, branch="", base_branch="", head_sha="", container_id="",
            exit_code=None, result=RunResult(), created_at=now, updated_at=now, started_at=None, ended_at=None, version=0,
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Run:
        """From a row holding at least the run's columns (booleans as 0/1, ``result`` and ``options`` as JSON)."""
        data = {name: row[name] for name in RUN_COLUMNS}
        data["is_pull"] = bool(data["is_pull"])
        data["review"] = bool(data["review"])
        data["result"] = RunResult.from_json(data["result"])
        data["options"] = json.loads(data["options"])
        return cls(**data)


RUN_COLUMNS = tuple(f.name for f in fields(Run))


def allowed_from(to: str, expect: Iterable[str] | None = None) -> set[str]:
    """The states a run may move to ``to`` from, narrowed to ``expect``."""
    allowed = {s for s, targets in TRANSITIONS.items() if to in targets}
    return allowed if expect is None else allowed & set(expect)


def move_changes(to: str, reason: str, changes: dict[str, Any], now: float) -> dict[str, Any]:
    """What a move to ``to`` writes besides ``changes``: the state, the times, and the container
    forgotten once the run ended or waits again. Each backend writes it and logs the transition."""
    changes = changes | {"state": to, "updated_at": now}
    if to in TERMINAL:
        changes.setdefault("ended_at", now)
    if to in TERMINAL or to == "queued":
        changes.setdefault("container_id", "")
    if reason:
        changes["reason"] = reason
    return changes


def encode_run_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Run column changes as stored: known columns only, the result and the options as JSON."""
    unknown = set(changes) - set(RUN_COLUMNS)
    assert not unknown, unknown
    if "result" in changes:
        changes = changes | {"result": changes["result"].to_json()}
    if "options" in changes:
        changes = changes | {"options": json.dumps(changes["options"])}
    return changes

# Reported facets kept as columns of ``runs``, where an index finds the runs still to report.
COLUMN_FACETS = {"version": "reported_version"}

# What compaction drops from a finished run once its workspace is gone. Facets whose memory only
# spares a later /status refresh a write that changes nothing (the comment's text, the commit status,
# the state label); the comment, the links, the stopwatch and the trigger label's removal stay, so a
# refresh edits the same comment, never books time twice and never removes a label again. And the
# log tails in ``result`` (up to 4,000 characters each), which go with the logs they were cut from.
DROPPED_FACETS = ("comment_body", "status", "state_label")
DROPPED_RESULTS = ("log_tail", "qa_log")


@dataclass(frozen=True)
class PoolState:
    name: str
    frozen: bool | None
    paused_until: float
    quick_failures: int
    last_spawn_at: float


@dataclass(frozen=True)
class Replica:
    """A bot process sharing the store, as its last heartbeat left it."""

    id: str
    host: str
    started_at: float
    seen_at: float
    max_running: int
    lost_at: float | None  # when the others gave up on it and failed or requeued its runs


@dataclass(frozen=True)
class OutboxItem:
    id: int
    key: str
    kind: str
    owner: str
    repo: str
    number: int
    payload: dict[str, Any]
    run_id: int | None
    attempts: int


@dataclass(frozen=True)
class Pruned:
    """What one retention pass removed, for the log and the bench."""

    bodies: int = 0
    deliveries: int = 0
    triggers: int = 0
    outbox: int = 0
    pages: int = 0  # database pages given back to the file system


# What a run's model calls used (the gateway meters every call) ---------------------------------


@dataclass(frozen=True)
class ModelUsage:
    """One model's share of a run's calls; with no price for the model, ``cost_usd`` is None
    (shown as "cost unknown", never guessed)."""

    model: str
    calls: int = 0
    input_tokens: int = 0  # all prompt tokens, cached ones included
    output_tokens: int = 0  # reasoning tokens included
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    wait_seconds: float = 0.0  # time spent waiting on the model's answers

    def __add__(self, other: ModelUsage) -> ModelUsage:
        cost = None if self.cost_usd is None or other.cost_usd is None else self.cost_usd + other.cost_usd
        return ModelUsage(
            self.model, self.calls + other.calls, self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens, self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens, cost, self.wait_seconds + other.wait_seconds,
        )


@dataclass(frozen=True)
class Usage:
    """What a run used so far, by model, and the last few things its agent did (read from the tool
    calls in the model's answers, shortened and masked, oldest first)."""

    by_model: tuple[ModelUsage, ...] = ()
    actions: tuple[str, ...] = ()

    @property
    def total(self) -> ModelUsage:
        """All models together; its cost is None when any model's price is unknown."""
        total = ModelUsage("", cost_usd=0.0)
        for part in self.by_model:
            total = total + part
        return total


MAX_ACTIONS = 8  # the last actions a run's usage keeps

# A usage row's columns, after its model: what ``add_usage`` adds up and ``model_usage`` reads back.
USAGE_SUMS = ("calls", "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "cost_usd",
              "unpriced", "wait_seconds")


def utc_day(at: float) -> str:
    """The UTC day of an epoch time, as usage is kept and daily budgets count: ``2026-12-06``."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


def usage_row(usage: ModelUsage) -> tuple[Any, ...]:
    """``USAGE_SUMS`` of one addition; a call with no price adds to ``unpriced`` and nothing to the cost."""
    unpriced = usage.cost_usd is None
    return (usage.calls, usage.input_tokens, usage.output_tokens, usage.cached_tokens, usage.reasoning_tokens,
            0.0 if unpriced else usage.cost_usd, max(usage.calls, 1) if unpriced else 0, usage.wait_seconds)


def model_usage(row: Mapping[str, Any]) -> ModelUsage:
    """A row of sums (``model`` and ``USAGE_SUMS``) as a model's usage: its cost unknown if any call had no price."""
    return ModelUsage(
        row["model"], row["calls"], row["input_tokens"], row["output_tokens"], row["cached_tokens"],
        row["reasoning_tokens"], None if row["unpriced"] else row["cost_usd"], row["wait_seconds"],
    )


def kept_actions(old: Sequence[str], new: Sequence[str]) -> list[str]:
    return [*old, *new][-MAX_ACTIONS:]


def usages(sums: Iterable[Mapping[str, Any]], actions: Iterable[Mapping[str, Any]]) -> dict[int, Usage]:
    """Runs' usage from rows of sums per (run_id, model) and rows of (run_id, actions as JSON)."""
    models: dict[int, list[ModelUsage]] = {}
    for row in sums:
        models.setdefault(row["run_id"], []).append(model_usage(row))
    kept = {row["run_id"]: tuple(json.loads(row["actions"])) for row in actions}
    return {run_id: Usage(tuple(models.get(run_id, ())), kept.get(run_id, ())) for run_id in sorted(set(models) | set(kept))}


@dataclass(frozen=True)
class UsageTotal:
    """What the runs of one repository and agent used over a while, by model."""

    repo: str  # owner/name
    agent: str
    runs: int
    usage: Usage


def usage_totals(found: Iterable[Mapping[str, Any]]) -> list[UsageTotal]:
    """Rows of sums per (owner, repo, agent, run_id, model), as totals per repository and agent."""
    models: dict[tuple[str, str], dict[str, ModelUsage]] = {}
    runs: dict[tuple[str, str], set[int]] = {}
    for row in found:
        key = (f"{row['owner']}/{row['repo']}", row["agent"])
        part = model_usage(row)
        by_model = models.setdefault(key, {})
        by_model[part.model] = by_model[part.model] + part if part.model in by_model else part
        runs.setdefault(key, set()).add(row["run_id"])
    return [UsageTotal(repo, agent, len(runs[(repo, agent)]), Usage(tuple(models[(repo, agent)].values())))
            for repo, agent in sorted(models)]


# What the dashboard and the metrics read ------------------------------------------------------


class StateChange(NamedTuple):
    """One line of a run's history, as the transitions table keeps it."""

    id: int
    run_id: int
    from_state: str | None
    to_state: str
    reason: str
    at: float


class RunEvent(NamedTuple):
    """A state change as the metrics see it, everything as of the change itself."""

    id: int
    to_state: str
    at: float
    agent: str
    first_start: bool  # the run never ran before this change
    running_since: float | None  # when the run last started running before this change
    requested_at: float  # arrival of the delivery that asked for the run, else the run's creation


class Census(NamedTuple):
    live: dict[tuple[str, str], int]  # (pool, state) -> runs
    outbox: int  # Forge writes not yet done
    deliveries: int  # deliveries not yet handled
