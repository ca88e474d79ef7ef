"""Which queued runs may start now: a pure decision over plain rows, the same for every backend.

The store reads the live runs and the pools in one transaction, asks ``claimable``, and moves
the chosen runs to ``preparing`` in that same transaction: that is what makes N simultaneous
requests start exactly L.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from bot.store.model import ACTIVE, PoolState


class LiveRun(NamedTuple):
    """What the policy needs to know of a live run."""

    id: int
    state: str
    pool: str
    owner: str
    repo: str
    workspace_key: str
    attempts: int


class Daily(NamedTuple):
    """What each repository, and some pools, may spend on model calls per UTC day (USD)."""

    repo_usd: float | None = None
    pool_usd: Mapping[str, float] = {}


class Limits(NamedTuple):
    """The configured limits a claim obeys."""

    max_running: int
    pool_limits: Mapping[str, int]
    spawn_intervals: Mapping[str, float]
    frozen_pools: frozenset[str] = frozenset()
    replica_room: int | None = None  # how many more runs the claiming replica's machine may hold
    daily: Daily | None = None  # the daily budgets in USD, if any


class Spent(NamedTuple):
    """What was spent on the claim's UTC day, per repository ("owner/name") and per pool (USD)."""

    repo: Mapping[str, float]
    pool: Mapping[str, float]

    @classmethod
    def of(cls, found: Sequence[tuple[str, str, str, float]]) -> Spent:
        """From rows of (owner, repo, pool, USD)."""
        repo: dict[str, float] = {}
        pool: dict[str, float] = {}
        for owner, name, pool_name, usd in found:
            repo[f"{owner}/{name}"] = repo.get(f"{owner}/{name}", 0.0) + usd
            pool[pool_name] = pool.get(pool_name, 0.0) + usd
        return cls(repo, pool)


NOTHING_SPENT = Spent({}, {})


class Hold(NamedTuple):
    """A daily budget that keeps a run queued: whose ("repository", "pool"), its name, cap and spending."""

    whose: str
    name: str
    cap: float
    spent: float


def daily_hold(daily: Daily | None, spent: Spent, owner: str, repo: str, pool: str) -> Hold | None:
    """The daily budget spent that keeps a run of this repository and pool from starting today, if any."""
    if daily is None:
        return None
    name = f"{owner}/{repo}"
    if daily.repo_usd is not None and spent.repo.get(name, 0.0) >= daily.repo_usd:
        return Hold("repository", name, daily.repo_usd, spent.repo[name])
    cap = daily.pool_usd.get(pool)
    if cap is not None and spent.pool.get(pool, 0.0) >= cap:
        return Hold("pool", pool, cap, spent.pool[pool])
    return None


def is_frozen(runtime: str | bool | None, configured: bool) -> bool:
    """A frozen switch set at run time wins over the one from config."""
    if runtime is None:
        return configured
    return runtime in (True, "1")


WorkspaceKey = tuple[str, str, str]  # owner, repo, workspace key


def claimable(
    live: Sequence[LiveRun], pools: Mapping[str, PoolState], limits: Limits, now: float,
    held: Collection[WorkspaceKey] = (), spent: Spent = NOTHING_SPENT,
) -> list[LiveRun]:
    """The queued runs that may start, FIFO by id.

    A run waits while its pool is frozen, paused (backoff), inside its spawn interval, full, or
    while another live run holds the same workspace, or while the workspace is ``held`` (the
    runner's word: a container still mounts it, or an ended run's task still works in it), or while
    its repository or pool spent its daily budget (``spent``: today's, UTC); all
    runs wait while the bot (every replica together) or the claiming replica's machine is full.
    One waiting pool never holds up the others.
    """
    active = [r for r in live if r.state in ACTIVE]
    per_pool: dict[str, int] = {}
    for r in active:
        per_pool[r.pool] = per_pool.get(r.pool, 0) + 1
    busy = {(r.owner, r.repo, r.workspace_key) for r in active} | set(held)
    total = len(active)
    chosen: list[LiveRun] = []
    spawned: set[str] = set()
    for run in sorted((r for r in live if r.state == "queued"), key=lambda r: r.id):
        if total >= limits.max_running or (limits.replica_room is not None and len(chosen) >= limits.replica_room):
            break
        pool = pools.get(run.pool)
        if is_frozen(pool and pool.frozen, run.pool in limits.frozen_pools) or (pool and pool.paused_until > now):
            continue
        interval = limits.spawn_intervals.get(run.pool, 0.0)
        if interval > 0 and (run.pool in spawned or (pool and now - pool.last_spawn_at < interval)):
            continue
        if per_pool.get(run.pool, 0) >= limits.pool_limits.get(run.pool, limits.max_running):
            continue
        key = (run.owner, run.repo, run.workspace_key)
        if key in busy or daily_hold(limits.daily, spent, run.owner, run.repo, run.pool):
            continue
        busy.add(key)
        per_pool[run.pool] = per_pool.get(run.pool, 0) + 1
        total += 1
        spawned.add(run.pool)
        chosen.append(run)
    return chosen
