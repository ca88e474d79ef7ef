"""Benchmark of the dispatch engine: latency, workspace preparation, supervision cost, queue drain.

Everything real: the fake Forge of the tests (REST API checked against Gitea's spec, smart-HTTP
git, signed webhooks) runs in this process; the bot runs as a subprocess (``python -m bot.cli
serve``, as ``tests/process.py`` starts it) so its CPU time and RSS can be read from
``/proc/<pid>``; agents are the scripted agent image of the tests on the local Docker engine.
Nothing is mocked. The figures:

1. **request -> running latency** (target p50 < 1 s). A warm-up run fills the repository's
   mirror; then, one at a time on an otherwise idle bot, a ``/dispatch codex ... scenario:slow-ok:1``
   comment is posted on a new issue (the fake Forge delivers the webhook at once) and the clock runs
   from just before the comment is posted to the run's ``running`` transition (the ``at`` column of
   the ``transitions`` table: the container has been started). Also shown: the same from the
   ``queued`` transition (``request_run``), and each stage: webhook -> queued (intake: permission
   check, reaction, request), queued -> preparing (the runner's claim), preparing -> running
   (Forge reads, mirror fetch, ``git clone --local``, checkout, prompt, container create + start).
   Measured in both egress modes, a bot each, in turns: ``gateway`` (the closed network) must stay
   within 10 % of ``open`` at p50. With ``--real-image``, measured again with the real agent image:
   the real codex runs against a scripted fake model (tests/fakemodel) that has it create and edit a file.

2. **workspace preparation from the mirror vs a plain clone** (target >= 10x faster). A repository
   with ~50 MB of history is generated with ``git fast-import`` (commits rewriting files of random
   bytes: incompressible, so the pack is as big as the history) and pushed to the fake Forge. Then
   ``Workspaces.prepare`` for a fresh workspace key, with the mirror already cloned (it still runs
   its ``git fetch`` of the mirror from the Forge, a no-op fetch, as every prepare does), against
   ``git clone`` of the same repository over smart HTTP from the fake Forge (the ratio's
   reference), and ``git clone --no-local`` from a ``file://`` URL of the Forge's bare repository
   (no HTTP, for comparison). Medians of several repetitions, page cache warm for all.

3. **bot CPU and RSS while supervising 200 sleeping containers** (targets < 5 % of one core,
   < 150 MB). A bot with max_running and the codex pool limit above 200, a one-hour timeout,
   32 MiB / 64 pids per container, gets 200 ``scenario:hang`` dispatches (one issue each). The
   ramp-up (first comment -> N containers running) is printed; once all are running (or the ramp
   stalls), the bot process's CPU time (all threads; its git children apart) and RSS are sampled for
   30 s (one tick of the bot's 30 s drain and report jobs). The containers are removed afterwards,
   only those whose workspace label lies under this benchmark's temporary directory: containers
   of the tests running on the same engine carry ``dispatchbot.run`` too.

4. **queue drain and per-run overhead**, two figures with different scope:
   a. *1,000 queued runs drained under limits, lost and doubled runs* (target 0 and 0): the real
      ``Store`` on a fresh SQLite file, no containers. 1,000 runs are requested (three pools, one
      run in five sharing its workspace with another); then three concurrent drainers call
      ``Store.claim`` with pool limits and a total limit, a worker per claimed run walks it
      preparing -> running -> qa -> harvesting -> completed with conditional transitions, 100
      redeliveries of already seen triggers arrive meanwhile, and every 20th run is cancelled at a
      random moment. Lost = a run not in a terminal state, or a request that made no run;
      doubled = a run claimed, started or ended more than once, or a redelivery that made a run.
      The limits are checked from the ``transitions`` table (peak active per pool and in total).
      Claim times are shown too (all claims, and those made with at least half the runs queued).
   b. *bot overhead per run* (target < 10 ms): the bot subprocess runs ``scenario:no-change``
      dispatches (real containers, max 8 at once) from webhook to ``completed`` with the reporter
      done; overhead = the bot process's own CPU time (its Python, all threads) / runs. The CPU of
      its git children is shown apart; Docker's and the fake Forge's are not the bot's.

    python bench/dispatch.py [--quick] [--only 1,2,3,4] [--real-image dispatchbot-agent:latest] [--egress open]

``--quick`` uses fewer runs (latency 6, 40 sleeping containers, 300 store runs, 20 real runs) and
finishes in about a minute; the default takes about four on a 2-core machine. The exit status is 1
when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pydantic import SecretStr  # noqa: E402

from bot.executor.docker import DockerExecutor  # noqa: E402
from bot.runs.containers import RUN_LABEL  # noqa: E402
from bot.settings import GitIdentity  # noqa: E402
from bot.store import ACTIVE, TERMINAL, RunRequest, SqliteStore  # noqa: E402
from bot.workspace import Workspaces  # noqa: E402
from tests.agentimage.build import build as build_agent_image  # noqa: E402
from tests.fakeforge import FakeForge, Issue, Repo, User  # noqa: E402
from tests.fakemodel import FakeModel  # noqa: E402
from tests.harness import AGENT_KEYS  # noqa: E402
from tests.process import BotProcess  # noqa: E402

LATENCY_TARGET_S = 1.0
EGRESS_RATIO_TARGET = 1.10  # figure 1 with egress = "gateway" within 10 % of "open"
PREP_SPEEDUP_TARGET = 10.0
IDLE_CPU_TARGET_PCT = 5.0
IDLE_RSS_TARGET_MB = 150.0
OVERHEAD_TARGET_MS = 10.0

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(message: str) -> None:
    """Progress goes to stderr; the figures to stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p=100 is the max); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# The bot process ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One reading of /proc/<pid>: CPU seconds of the process (all threads) and of its waited-for
    children (git), and the resident set size in bytes."""

    at: float
    cpu: float
    children_cpu: float
    rss: int


def proc_sample(pid: int) -> ProcSample:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    rss_kb = next(
        int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return ProcSample(time.monotonic(), (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK, rss_kb * 1024)


class Bot:
    """The bot as a subprocess (``tests.process.BotProcess``) plus read-only views of its SQLite file."""

    def __init__(self, forge: FakeForge, token: str, data_dir: Path, **env: str) -> None:
        self.process = BotProcess(forge.url, token, data_dir, **env)
        self.db = data_dir / "dispatchbot.sqlite3"

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    @property
    def url(self) -> str:
        return self.process.url

    async def start(self) -> None:
        await self.process.start()

    async def stop(self) -> None:
        await self.process.stop()

    def sample(self) -> ProcSample:
        return proc_sample(self.pid)

    def query(self, sql: str, *args: Any) -> list[tuple]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def states(self) -> Counter[str]:
        return Counter({state: n for state, n in self.query("SELECT state, COUNT(*) FROM runs GROUP BY state")})

    def transitions_of(self, owner: str, repo: str, number: int) -> dict[str, float]:
        """to_state -> time of its first transition, for the run(s) on one issue."""
        rows = self.query(
            "SELECT t.to_state, MIN(t.at) FROM transitions t JOIN runs r ON r.id = t.run_id"
            " WHERE r.owner = ? AND r.repo = ? AND r.number = ? GROUP BY t.to_state",
            owner, repo, number,
        )
        return dict(rows)

    def reporter_idle(self) -> bool:
        """No outbox item pending and every run's latest version reported to the Forge."""
        (pending,) = self.query("SELECT COUNT(*) FROM outbox WHERE done_at IS NULL")[0]
        (stale,) = self.query("SELECT COUNT(*) FROM runs WHERE reported_version < version")[0]
        return pending == 0 and stale == 0

    def log_tail(self, lines: int = 15) -> str:
        text = self.process.log.read_text(errors="replace") if self.process.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


async def until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll a predicate; False on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(interval)
    return predicate()


# The world: fake Forge, users, repositories ------------------------------------------------


@dataclass
class World:
    forge: FakeForge
    bot_user: User
    writer: User
    tmp: Path
    image: str
    egress: str = "gateway"

    def add_repo(self, name: str, files: dict[str, str | bytes] | None = None) -> Repo:
        files = files or {"README.md": f"# {name}\n", "src/app.py": "print(1)\n"}
        repo = self.forge.add_repo("acme", name, files=files)
        self.forge.set_permission(repo, self.bot_user.login, "admin")
        self.forge.set_permission(repo, self.writer.login, "write")
        return repo

    def start_bot(self, name: str, repo: Repo, **env: str) -> Bot:
        """A bot subprocess with its own data directory, hooked to ``repo``."""
        base = {
            "DISPATCHBOT_IMAGE": self.image,
            "DISPATCHBOT_BOT_LOGIN": self.bot_user.login,
            "DISPATCHBOT_LIMITS__MEMORY": "256m",
            "DISPATCHBOT_LIMITS__CPUS": "1",
            "DISPATCHBOT_LIMITS__PIDS": "256",
            "DISPATCHBOT_LIMITS__TIMEOUT": "300",
            "DISPATCHBOT_LIMITS__GRACE": "1",
            "DISPATCHBOT_EGRESS": self.egress,
            "DISPATCHBOT_GATEWAY__PORT": "0",
            "DISPATCHBOT_GATEWAY__PROXY_PORT": "0",
            **AGENT_KEYS,
        }
        bot = Bot(self.forge, self.bot_user.token, self.tmp / name / "data", **(base | env))
        self.forge.add_hook(repo, url=bot.url + "/webhook", secret=bot.process.secret)
        return bot

    async def issues(self, repo: Repo, count: int, title: str) -> list[Issue]:
        return [
            await self.forge.create_issue(repo, self.writer, title=f"{title} {n}", body="Details in the task.")
            for n in range(count)
        ]

    async def comment(self, repo: Repo, issue: Issue, text: str) -> None:
        """Post a comment; returns once the bot has answered its webhook."""
        await self.forge.create_comment(repo, issue.number, self.writer, text)


def unix_connections(pid: int) -> str:
    """Established Unix stream sockets of a process (its Docker API connections, mostly), per ``ss``."""
    try:
        out = subprocess.run(["ss", "-xp", "state", "established"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return str(sum(1 for line in out.splitlines() if f"pid={pid}," in line))


async def remove_containers(tmp: Path) -> tuple[int, float]:
    """Force-remove the run containers whose workspace lies under ``tmp``; (count, seconds)."""
    start = time.monotonic()
    executor = DockerExecutor()
    try:
        mine = [c for c in await executor.list(RUN_LABEL)
                if c.labels.get("dispatchbot.workspace", "").startswith(str(tmp) + "/")]
        gate = asyncio.Semaphore(8)

        async def remove(container_id: str) -> None:
            async with gate:
                await executor.remove(container_id)

        await asyncio.gather(*(remove(c.id) for c in mine))
    finally:
        await executor.close()
    return len(mine), time.monotonic() - start


# Figure 1: request -> running latency -------------------------------------------------------


@dataclass
class Latency:
    image: str = ""
    egress: str = "gateway"
    from_webhook: list[float] = field(default_factory=list)
    from_queued: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    failures: list[str] = field(default_factory=list)


@dataclass
class Latencies:
    """Figure 1 in both egress modes, measured in turns on the same machine at the same time."""

    modes: dict[str, Latency]


EGRESS_MODES = ("gateway", "open")


async def figure_latency(world: World, runs: int, image: str = "") -> Latencies:
    """One bot per egress mode, each with its own repository, dispatched in turns (the order flips
    every round) so that both meet the same machine. With ``image`` (the real agent image), the
    real codex runs, talking to a scripted fake model on the host's loopback that makes it create
    and edit a file (tests/fakemodel)."""
    model = FakeModel()
    await model.start()
    real = {
        "DISPATCHBOT_IMAGE": image, "DISPATCHBOT_CONTAINER_NETWORK": "host", "DISPATCHBOT_LIMITS__MEMORY": "2g",
        "DISPATCHBOT_BASE_URLS__CODEX": model.url, "DISPATCHBOT_DEFAULT_MODELS__CODEX": "fake-coder",
        "OPENAI_API_KEY": "sk-bench-not-a-real-key",
    }
    suffix = "-real" if image else ""
    repos = {mode: world.add_repo(f"widgets{suffix}-{mode}") for mode in EGRESS_MODES}
    bots = {mode: world.start_bot(f"latency{suffix}-{mode}", repos[mode], DISPATCHBOT_EGRESS=mode,
                                  **(real if image else {}))
            for mode in EGRESS_MODES}
    result = Latencies({mode: Latency(image=image or world.image, egress=mode) for mode in EGRESS_MODES})
    try:
        for bot in bots.values():
            await bot.start()
        issues = {mode: await world.issues(repos[mode], runs + 1, "Improve the widgets") for mode in EGRESS_MODES}
        log(f"latency: a warm-up run per mode (fills the mirror), then {runs} measured runs per mode, in turns")
        for n in range(runs + 1):
            for mode in EGRESS_MODES if n % 2 else reversed(EGRESS_MODES):
                await _one_latency(world, bots[mode], repos[mode], issues[mode][n], n, result.modes[mode])
    finally:
        for bot in bots.values():
            await bot.stop()
        await model.close()
    return result


async def _one_latency(world: World, bot: Bot, repo: Repo, issue: Issue, n: int, result: Latency) -> None:
    def moves() -> dict[str, float]:
        return bot.transitions_of("acme", repo.name, issue.number)

    scenario = "no-change" if n == 0 else "slow-ok:1"
    t0 = time.time()
    await world.comment(repo, issue, f"/dispatch codex improve widgets {n} scenario:{scenario}")
    if not await until(lambda: "running" in moves(), 30):
        result.failures.append(f"issue {issue.number}: not running after 30 s")
        return
    at = moves()
    if n > 0:
        result.from_webhook.append(at["running"] - t0)
        result.from_queued.append(at["running"] - at["queued"])
        result.stages["webhook -> queued"].append(at["queued"] - t0)
        result.stages["queued -> preparing"].append(at["preparing"] - at["queued"])
        result.stages["preparing -> running"].append(at["running"] - at["preparing"])
    # Let the run finish and the reporter settle, so the next one meets an idle bot.
    ended = await until(lambda: not moves().keys().isdisjoint(TERMINAL), 60)
    await until(bot.reporter_idle, 30)
    final = bot.query("SELECT state, reason FROM runs WHERE repo = ? AND number = ?", repo.name, issue.number)
    if not ended or final[0][0] != "completed":
        result.failures.append(f"issue {issue.number}: {final}")


# Figure 2: workspace prep from the mirror vs a plain clone -------------------------------------


@dataclass
class Prep:
    history_mb: float = 0.0
    commits: int = 0
    generate_s: float = 0.0
    mirror_clone_s: float = 0.0
    prepare_s: list[float] = field(default_factory=list)
    http_clone_s: list[float] = field(default_factory=list)
    file_clone_s: list[float] = field(default_factory=list)


async def git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> str:
    """git in a thread: the fake Forge it may talk to is served by this process's event loop."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    argv = ["git", *args]
    res = await asyncio.to_thread(subprocess.run, argv, cwd=cwd, input=input, capture_output=True, env=env)
    if res.returncode:
        raise RuntimeError(f"git {' '.join(args)}: {res.stderr.decode(errors='replace')}")
    return res.stdout.decode(errors="replace")


def fast_import_stream(parent: str, commits: int, files: int, file_bytes: int) -> bytes:
    """``git fast-import`` input: ``commits`` commits on main after ``parent``, each rewriting one of
    ``files`` binary files with fresh random bytes (so no delta and no compression helps)."""
    out = bytearray()
    when = 1_700_000_000
    for n in range(commits):
        data = os.urandom(file_bytes)
        message = f"data: regenerate blob-{n % files}.bin ({n})\n".encode()
        out += b"commit refs/heads/main\n"
        out += f"committer Bench <bench@example.com> {when + n * 60} +0000\n".encode()
        out += b"data %d\n%s\n" % (len(message), message)
        if n == 0:
            out += f"from {parent}\n".encode()
        out += f"M 100644 inline data/blob-{n % files}.bin\n".encode()
        out += b"data %d\n%s\n" % (len(data), data)
    return bytes(out)


async def clone_timed(argv: list[str], dest: Path) -> float:
    shutil.rmtree(dest, ignore_errors=True)
    start = time.perf_counter()
    await git(*argv, str(dest))
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest, ignore_errors=True)
    return elapsed


async def figure_prep(world: World, history_mb: int, commits: int, reps: int) -> Prep:
    result = Prep(commits=commits)
    forge = world.forge
    repo = world.add_repo("history")
    work = world.tmp / "prep"
    work.mkdir(parents=True)

    log(f"prep: generating ~{history_mb} MB of history in {commits} commits")
    start = time.perf_counter()
    gen = work / "gen"
    await git("clone", "--quiet", forge.clone_url(repo), str(gen))
    parent = (await git("rev-parse", "HEAD", cwd=gen)).strip()
    stream = fast_import_stream(parent, commits, files=8, file_bytes=history_mb * 1024 * 1024 // commits)
    await git("fast-import", "--quiet", cwd=gen, input=stream)
    await git("push", "--quiet", forge.clone_url(repo, world.bot_user), "main", cwd=gen)
    result.generate_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in (repo.path / "objects").rglob("*") if p.is_file())
    result.history_mb = size / 1e6
    assert forge.branch_sha(repo, "main") == (await git("rev-parse", "HEAD", cwd=gen)).strip(), "push did not land"
    shutil.rmtree(gen)

    workspaces = Workspaces(
        work / "data", forge.url, SecretStr(world.bot_user.token), GitIdentity(), owner="1000:1000"
    )
    start = time.perf_counter()
    await workspaces.tag_commit("acme", repo.name, "none")  # clones the mirror first, as a dispatch on a tag does
    result.mirror_clone_s = time.perf_counter() - start

    log(f"prep: {reps} x Workspaces.prepare (warm mirror), git clone over HTTP, git clone --no-local file://")
    for n in range(reps):
        start = time.perf_counter()
        ws = await workspaces.prepare("acme", repo.name, f"issue-{n + 1}", f"agent/bench-{n}", "main", new_branch=True)
        result.prepare_s.append(time.perf_counter() - start)
        assert (ws.clone / "data" / "blob-0.bin").is_file()
        result.http_clone_s.append(await clone_timed(["clone", "--quiet", forge.clone_url(repo)], work / "plain"))
        result.file_clone_s.append(
            await clone_timed(["clone", "--quiet", "--no-local", f"file://{repo.path}"], work / "plain")
        )
    return result


# Figure 3: 200 sleeping containers -----------------------------------------------------------


@dataclass
class Idle:
    wanted: int
    running: int = 0
    ramp: list[float] = field(default_factory=list)  # seconds from the first comment to each running
    dispatch_s: float = 0.0
    stalled: str = ""
    window_s: float = 0.0
    cpu_pct: float = math.nan
    children_cpu_pct: float = math.nan
    rss_mb: list[float] = field(default_factory=list)
    ramp_cpu_s: float = 0.0
    removed: int = 0
    remove_s: float = 0.0
    final_states: Counter[str] = field(default_factory=Counter)
    errors: str = ""


async def figure_idle(world: World, count: int, window: float, stall: float) -> Idle:
    repo = world.add_repo("fleet")
    limit = str(count + 50)
    bot = world.start_bot(
        "idle", repo,
        DISPATCHBOT_MAX_RUNNING=limit,
        DISPATCHBOT_POOLS__CODEX__LIMIT=limit,
        DISPATCHBOT_LIMITS__MEMORY="32m",
        DISPATCHBOT_LIMITS__PIDS="64",
        DISPATCHBOT_LIMITS__CPUS="0.5",
        DISPATCHBOT_LIMITS__TIMEOUT="3600",
    )
    result = Idle(wanted=count)
    await bot.start()
    try:
        issues = await world.issues(repo, count, "Sleep")
        log(f"idle: dispatching {count} hanging agents")
        before = bot.sample()
        t0 = time.time()
        await asyncio.gather(*(world.comment(repo, i, "/dispatch codex sleep scenario:hang") for i in issues))
        result.dispatch_s = time.time() - t0
        last_change, last_running = time.monotonic(), -1
        while True:
            states = bot.states()
            running = states["running"]
            if running != last_running:
                log(f"idle: {dict(states)} after {time.time() - t0:.0f} s")
                last_change, last_running = time.monotonic(), running
            if running >= count:
                break
            if not any(states[s] for s in ("queued", "preparing")) and sum(states.values()) >= count:
                result.stalled = f"runs ended instead of running: {dict(states)}"
                break
            if time.monotonic() - last_change > stall:
                result.stalled = (f"no new running container for {stall:.0f} s: {dict(states)};"
                                  f" the bot holds {unix_connections(bot.pid)} Unix-socket connections")
                break
            await asyncio.sleep(0.5)
        result.ramp_cpu_s = bot.sample().cpu - before.cpu
        result.ramp = sorted(at - t0 for (at,) in bot.query("SELECT at FROM transitions WHERE to_state = 'running'"))
        result.running = len(result.ramp)
        await until(bot.reporter_idle, 30, 0.2)
        await asyncio.sleep(2.0)
        log(f"idle: sampling the bot for {window:.0f} s with {bot.states()['running']} containers running")
        first = bot.sample()
        samples = [first]
        while samples[-1].at - first.at < window:
            await asyncio.sleep(1.0)
            samples.append(bot.sample())
        last = samples[-1]
        result.window_s = last.at - first.at
        result.cpu_pct = 100 * (last.cpu - first.cpu) / result.window_s
        result.children_cpu_pct = 100 * (last.children_cpu - first.children_cpu) / result.window_s
        result.rss_mb = [s.rss / 2**20 for s in samples]
        result.final_states = bot.states()
        if result.stalled:
            result.errors = "\n".join(line for line in bot.log_tail(400).splitlines()
                                      if "ERROR" in line or "Error" in line)[-2000:]
    finally:
        await bot.stop()
        log("idle: removing the containers")
        result.removed, result.remove_s = await remove_containers(world.tmp)
    return result


# Figure 4a: 1,000 queued runs through the store ---------------------------------------------


@dataclass
class Drain:
    runs: int
    redeliveries: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    peak: dict[str, int] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)
    claim_ms: list[float] = field(default_factory=list)
    claim_ms_deep: list[float] = field(default_factory=list)  # claims with >= half the runs queued
    request_ms: float = 0.0


async def figure_drain(tmp: Path, runs: int, seed: int = 7) -> Drain:
    """The real store, no containers: see figure 4a in the module docstring.

    All runs are queued first (the bot was frozen, or the burst came faster than the drain); then
    three drainers claim concurrently (the claim must hold however many callers overlap) while
    redeliveries of seen triggers and cancels keep arriving.
    """
    rng = random.Random(seed)
    agents = ("codex", "claude", "gemini")
    limits = {"codex": 3, "claude": 2, "gemini": 2}
    max_running = 6  # below the sum of the pool limits, so the total binds too
    result = Drain(runs=runs, limits=limits | {"total": max_running})
    path = tmp / "drain" / "dispatchbot.sqlite3"
    store = await SqliteStore.open(path)
    wake = asyncio.Event()
    workers: set[asyncio.Task[None]] = set()
    queued = runs

    def request(i: int) -> RunRequest:
        agent = agents[i % 3]
        # Numbers repeat: one run in five shares its issue's workspace with another, and waits for it.
        return RunRequest(owner="acme", repo="widgets", number=i % (runs * 4 // 5) + 1, is_pull=False, agent=agent,
                          model="", pool=agent, review=False, task=f"task {i}", trigger="comment",
                          requested_by="bob")

    async def redeliver() -> None:
        """A redelivery of an already handled comment must not make a second run."""
        for _ in range(runs // 10):
            await asyncio.sleep(rng.uniform(0, 0.01))
            j = rng.randrange(runs)
            result.redeliveries += 1
            if await store.request_run(request(j), trigger_key=f"comment:{j}") is not None:
                result.doubled.append(f"redelivery of request {j} made a run")

    async def cancel(run_id: int, delay: float) -> None:
        await asyncio.sleep(delay)
        await store.transition(run_id, "cancelled", reason="bench")
        wake.set()

    async def work(run_id: int) -> None:
        for to, expect in (("running", "preparing"), ("qa", "running"), ("harvesting", "qa"),
                           ("completed", "harvesting")):
            await asyncio.sleep(rng.uniform(0, 0.002))
            if await store.transition(run_id, to, expect=(expect,)) is None:
                break  # cancelled meanwhile
        wake.set()

    async def drainer() -> None:
        nonlocal queued
        while True:
            depth = queued
            start = time.perf_counter()
            claimed = await store.claim(max_running=max_running, pool_limits=limits, spawn_intervals={})
            elapsed = 1000 * (time.perf_counter() - start)
            result.claim_ms.append(elapsed)
            if depth >= runs // 2:
                result.claim_ms_deep.append(elapsed)
            queued -= len(claimed)
            for run in claimed:
                task = asyncio.create_task(work(run.id))
                workers.add(task)
                task.add_done_callback(workers.discard)
            if not claimed:
                if not workers and not await store.runs(states=("queued",)):
                    return
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), 0.5)
                except asyncio.TimeoutError:
                    pass

    try:
        start = time.perf_counter()
        ids = []
        for i in range(runs):
            run = await store.request_run(request(i), trigger_key=f"comment:{i}")
            if run is None:
                result.lost.append(f"request {i} made no run")
            else:
                ids.append(run.id)
        result.request_ms = 1000 * (time.perf_counter() - start) / runs

        cpu, start = time.process_time(), time.perf_counter()
        horizon = runs * 0.006  # about the drain's duration: cancels hit queued and active runs
        cancels = [asyncio.create_task(cancel(run_id, rng.uniform(0, horizon))) for run_id in ids[19::20]]
        await asyncio.gather(drainer(), drainer(), drainer(), redeliver())
        await asyncio.gather(*cancels)
        while workers:
            await asyncio.gather(*list(workers))
        result.elapsed_s = time.perf_counter() - start
        result.cpu_s = time.process_time() - cpu
        final = await store.runs()
    finally:
        await store.close()

    if len(final) != runs:
        result.lost.append(f"{len(final)} runs in the store for {runs} requests")
    pool_of = {r.id: r.pool for r in final}
    moves: dict[int, Counter[str]] = defaultdict(Counter)
    active: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    with sqlite3.connect(path) as conn:  # the whole log, in commit order
        rows = conn.execute("SELECT run_id, from_state, to_state FROM transitions ORDER BY id").fetchall()
    conn.close()
    for run_id, before, after in rows:
        moves[run_id][after] += 1
        pool = pool_of[run_id]
        if before == "queued" and after == "preparing":
            active[pool] += 1
            active["total"] += 1
        elif before in ACTIVE and after not in ACTIVE:
            active[pool] -= 1
            active["total"] -= 1
        peak[pool] = max(peak[pool], active[pool])
        peak["total"] = max(peak["total"], active["total"])
    result.peak = dict(peak)
    for run in final:
        result.outcomes[run.state] += 1
        if run.state not in TERMINAL:
            result.lost.append(f"run {run.id} left {run.state}")
        m = moves[run.id]
        ended = sum(m[s] for s in TERMINAL)
        if m["preparing"] > 1 or m["running"] > 1 or ended > 1 or run.attempts > 1:
            result.doubled.append(f"run {run.id}: {dict(m)}, attempts {run.attempts}")
    return result


# Figure 4b: per-run overhead of the bot with real containers ----------------------------------


@dataclass
class Overhead:
    runs: int
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    children_cpu_s: float = 0.0
    idle_cpu_pct: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    lost: int = 0
    doubled: int = 0
    rss_mb: float = 0.0


async def figure_overhead(world: World, runs: int, parallel: int) -> Overhead:
    repo = world.add_repo("churn")
    bot = world.start_bot(
        "overhead", repo,
        DISPATCHBOT_MAX_RUNNING=str(parallel),
        DISPATCHBOT_POOLS__CODEX__LIMIT=str(parallel),
    )
    result = Overhead(runs=runs)
    await bot.start()
    try:
        issues = await world.issues(repo, runs + 1, "Look around")
        log("overhead: warm-up run")
        await world.comment(repo, issues[0], "/dispatch codex look scenario:no-change")
        await until(lambda: bot.states()["completed"] == 1, 60, 0.1)
        await until(bot.reporter_idle, 30, 0.1)
        quiet = bot.sample()
        await asyncio.sleep(5.0)
        result.idle_cpu_pct = 100 * (bot.sample().cpu - quiet.cpu) / (time.monotonic() - quiet.at)

        log(f"overhead: {runs} runs of scenario:no-change, {parallel} at a time")
        before = bot.sample()
        await asyncio.gather(*(world.comment(repo, i, "/dispatch codex look scenario:no-change") for i in issues[1:]))

        def done() -> bool:
            states = bot.states()
            return sum(states[s] for s in TERMINAL) >= runs + 1 and bot.reporter_idle()

        if not await until(done, 30 + 3.0 * runs, 0.25):
            log(f"overhead: not all runs ended: {dict(bot.states())}")
        after = bot.sample()
        result.elapsed_s = after.at - before.at
        result.cpu_s = after.cpu - before.cpu
        result.children_cpu_s = after.children_cpu - before.children_cpu
        result.rss_mb = after.rss / 2**20
        result.outcomes = bot.states()
        result.outcomes["completed"] -= 1  # the warm-up
        result.lost = runs - sum(result.outcomes[s] for s in TERMINAL)
        rows = bot.query(
            "SELECT run_id, SUM(to_state = 'running'), SUM(to_state IN ('completed', 'failed', 'cancelled', 'blocked'))"
            " FROM transitions GROUP BY run_id"
        )
        result.doubled = sum(1 for _, started, ended in rows if started > 1 or ended > 1)
    finally:
        await bot.stop()
        await remove_containers(world.tmp)
    return result


# Report ------------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    value: str
    target: str
    ok: bool | None  # None: information only

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "FAIL")


@dataclass(frozen=True)
class Note:
    """A remark printed under the table (a failed run, a stalled ramp-up)."""

    text: str


def counts(counter: Counter[str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items()) if v)


def s(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def report_latency(both: Latencies) -> list[Row | Note]:
    rows: list[Row | Note] = []
    for r in both.modes.values():
        p50, p95 = percentile(r.from_webhook, 50), percentile(r.from_webhook, 95)
        rows += [
            Row(f"1. egress {r.egress}: webhook -> running, p50 ({len(r.from_webhook)} runs, {r.image})", s(p50),
                f"< {LATENCY_TARGET_S:g} s", p50 < LATENCY_TARGET_S and not r.failures),
            Row("   webhook -> running, p95", s(p95), "", None),
            Row("   queued (request_run) -> running, p50 / p95",
                f"{s(percentile(r.from_queued, 50))} / {s(percentile(r.from_queued, 95))}", "", None),
        ]
        for stage, values in r.stages.items():
            rows.append(Row(f"   stage {stage}, p50 / p95", f"{s(percentile(values, 50))} / "
                            f"{s(percentile(values, 95))}", "", None))
        rows += [Note(f"1. failed run ({r.egress}): {failure}") for failure in r.failures]
    closed, open_ = both.modes["gateway"], both.modes["open"]
    if closed.from_webhook and open_.from_webhook:
        ratio = percentile(closed.from_webhook, 50) / percentile(open_.from_webhook, 50)
        rows.append(Row("1. closed network against open, p50", f"{ratio:.2f}x", f"<= {EGRESS_RATIO_TARGET:g}x",
                        ratio <= EGRESS_RATIO_TARGET))
    return rows


def report_prep(r: Prep) -> list[Row]:
    prepare, http, file = (statistics.median(v) for v in (r.prepare_s, r.http_clone_s, r.file_clone_s))
    ratio = http / prepare
    return [
        Row(f"2. history: {r.commits} commits, objects on the Forge", f"{r.history_mb:.1f} MB",
            "~50 MB", None),
        Row("   generate + push (fast-import, smart HTTP)", s(r.generate_s), "", None),
        Row("   mirror clone, cold (once per repository)", s(r.mirror_clone_s), "", None),
        Row(f"   Workspaces.prepare, warm mirror (median of {len(r.prepare_s)})", s(prepare), "", None),
        Row("   git clone over smart HTTP from the fake Forge (median)", s(http), "", None),
        Row("   git clone --no-local file:// (median)", s(file), "", None),
        Row("   speed-up prepare vs HTTP clone", f"{ratio:.1f}x", f">= {PREP_SPEEDUP_TARGET:g}x",
            ratio >= PREP_SPEEDUP_TARGET),
        Row("   speed-up prepare vs file:// --no-local clone", f"{file / prepare:.1f}x", "", None),
    ]


def report_idle(r: Idle) -> list[Row | Note]:
    def at(fraction: float) -> str:
        n = math.ceil(fraction * r.wanted)
        return s(r.ramp[n - 1]) if len(r.ramp) >= n else "never"

    all_running = r.running >= r.wanted
    # CPU and RSS pass only when measured with every container running.
    short = "" if all_running else f" ({r.final_states['running']} running)"
    rss_max = max(r.rss_mb, default=math.nan)
    rows: list[Row | Note] = [
        Row("3. containers running / wanted", f"{r.running} / {r.wanted}", f"{r.wanted}", all_running),
        Row("   dispatch: all comments answered after", s(r.dispatch_s), "", None),
        Row("   ramp-up: first / 25% / 50% / 75% / 100% running after",
            " / ".join([s(r.ramp[0]) if r.ramp else "never", at(0.25), at(0.5), at(0.75), at(1.0)]), "", None),
        Row("   bot CPU during the ramp-up", f"{r.ramp_cpu_s:.1f} s", "", None),
        Row(f"   bot CPU over {r.window_s:.0f} s while supervising", f"{r.cpu_pct:.2f} % of a core{short}",
            f"< {IDLE_CPU_TARGET_PCT:g} %", r.cpu_pct < IDLE_CPU_TARGET_PCT and all_running),
        Row("   its git children's CPU in the window", f"{r.children_cpu_pct:.2f} %", "", None),
        Row("   bot RSS, mean / max", f"{statistics.fmean(r.rss_mb):.0f} / {rss_max:.0f} MB{short}",
            f"< {IDLE_RSS_TARGET_MB:g} MB", rss_max < IDLE_RSS_TARGET_MB and all_running),
        Row("   containers removed afterwards", f"{r.removed} in {s(r.remove_s)}", "", None),
    ]
    if r.stalled:
        rows.append(Note(f"3. the ramp-up stopped: {r.stalled}"))
    return rows


def report_drain(r: Drain) -> list[Row]:
    limits_ok = all(r.peak.get(k, 0) <= v for k, v in r.limits.items())
    return [
        Row(f"4a. store drain: {r.runs} runs (+{r.redeliveries} redeliveries), lost", str(len(r.lost)), "0",
            not r.lost),
        Row("    doubled", str(len(r.doubled)), "0", not r.doubled),
        Row("    outcomes", counts(r.outcomes), "", None),
        Row("    peak active per pool / limit",
            ", ".join(f"{k} {r.peak.get(k, 0)}/{v}" for k, v in r.limits.items()), "<= limit", limits_ok),
        Row("    Store.request_run, mean", f"{r.request_ms:.2f} ms", "", None),
        Row("    drain: wall time, this process's CPU per run (claim + 4 transitions)",
            f"{s(r.elapsed_s)}, {1000 * r.cpu_s / r.runs:.2f} ms", "", None),
        Row("    Store.claim p50 / p95, all claims",
            f"{percentile(r.claim_ms, 50):.1f} / {percentile(r.claim_ms, 95):.1f} ms", "", None),
        Row(f"    Store.claim p50, >= {r.runs // 2} queued", f"{percentile(r.claim_ms_deep, 50):.1f} ms", "", None),
    ]


def report_overhead(r: Overhead) -> list[Row]:
    per_run = 1000 * r.cpu_s / r.runs
    return [
        Row(f"4b. bot CPU per run ({r.runs} real runs, no-change)", f"{per_run:.1f} ms", f"< {OVERHEAD_TARGET_MS:g} ms",
            per_run < OVERHEAD_TARGET_MS),
        Row("    its git children's CPU per run", f"{1000 * r.children_cpu_s / r.runs:.1f} ms", "", None),
        Row("    wall time, throughput", f"{s(r.elapsed_s)}, {60 * r.runs / r.elapsed_s:.0f} runs/min", "", None),
        Row("    bot CPU when idle (before)", f"{r.idle_cpu_pct:.2f} % of a core", "", None),
        Row("    outcomes; lost / doubled", f"{counts(r.outcomes)}; {r.lost} / {r.doubled}", "0 / 0",
            r.lost == 0 and r.doubled == 0),
        Row("    bot RSS at the end", f"{r.rss_mb:.0f} MB", "", None),
    ]


def print_table(rows: list[Row | Note]) -> None:
    table = [r for r in rows if isinstance(r, Row)]
    width = max(len(r.figure) for r in table)
    vwidth = max(len(r.value) for r in table)
    print(f"{'figure':<{width}}  {'value':<{vwidth}}  {'target':<10}  result")
    for r in table:
        print(f"{r.figure:<{width}}  {r.value:<{vwidth}}  {r.target:<10}  {r.verdict}")
    for note in (r for r in rows if isinstance(r, Note)):
        print(f"note: {note.text}")


# Main ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    latency_runs: int
    history_mb: int
    commits: int
    prep_reps: int
    sleepers: int
    window: float
    stall: float
    drain_runs: int
    overhead_runs: int
    parallel: int


FULL = Plan(latency_runs=20, history_mb=50, commits=200, prep_reps=5, sleepers=200, window=30.0, stall=60.0,
            drain_runs=1000, overhead_runs=150, parallel=8)
QUICK = Plan(latency_runs=6, history_mb=50, commits=200, prep_reps=3, sleepers=40, window=10.0, stall=30.0,
             drain_runs=300, overhead_runs=20, parallel=8)


async def run(plan: Plan, only: set[str], real_image: str, egress: str = "gateway") -> int:
    image = build_agent_image()
    rows: list[Row | Note] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-dispatch-") as tmpdir:
        tmp = Path(tmpdir)
        forge = FakeForge(root=tmp / "forge")
        await forge.start()
        world = World(forge, forge.add_user("dispatchbot"), forge.add_user("bob"), tmp, image, egress)
        steps: list[tuple[str, Callable[[], Awaitable[list[Row]]]]] = [
            ("2", lambda: figure_prep(world, plan.history_mb, plan.commits, plan.prep_reps)),
            ("1", lambda: figure_latency(world, plan.latency_runs)),
            *([("1", lambda: figure_latency(world, plan.latency_runs, real_image))] if real_image else []),
            ("4", lambda: figure_drain(tmp, plan.drain_runs)),
            ("4", lambda: figure_overhead(world, plan.overhead_runs, plan.parallel)),
            ("3", lambda: figure_idle(world, plan.sleepers, plan.window, plan.stall)),
        ]
        reports = {Prep: report_prep, Latencies: report_latency, Drain: report_drain, Overhead: report_overhead,
                   Idle: report_idle}
        results: list[Any] = []
        try:
            for figure, step in steps:
                if figure in only:
                    results.append(await step())
        finally:
            await remove_containers(tmp)
            await forge.close()
        order = [Latencies, Prep, Idle, Drain, Overhead]
        for kind in order:
            for result in results:
                if isinstance(result, kind):
                    rows += reports[kind](result)
                    if isinstance(result, Idle) and result.errors:
                        log(f"idle: errors in the bot's log:\n{result.errors}")
        violations = forge.violations
    print()
    print(f"dispatchbot dispatch benchmark: {os.cpu_count()} cores, Docker {docker_version()},"
          f" fake Forge in this process, bot as a subprocess; {time.monotonic() - started:.0f} s")
    print_table(rows)
    if violations:
        print(f"the bot broke the Forge's API spec {len(violations)} times: {violations[:3]}")
    return 0 if all(r.ok is not False for r in rows if isinstance(r, Row)) else 1


def docker_version() -> str:
    res = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True, text=True)
    return res.stdout.strip() or "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs, about a minute")
    parser.add_argument("--only", default="1,2,3,4", help="figures to run, e.g. 1,4")
    parser.add_argument("--real-image", default="", metavar="IMAGE",
                        help="also measure figure 1 with this agent image and the real codex")
    parser.add_argument("--egress", choices=("gateway", "open"), default="gateway",
                        help="the bot's egress mode for figures 3 and 4 (figure 1 measures both)")
    args = parser.parse_args()
    return asyncio.run(run(QUICK if args.quick else FULL, set(args.only.split(",")), args.real_image, args.egress))


if __name__ == "__main__":
    sys.exit(main())
