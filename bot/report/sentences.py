"""Every sentence the bot says on the Forge, in one place."""

from __future__ import annotations

import datetime
import time

from bot.gateway.proxy import ELSEWHERE
from bot.intake.commands import USAGE
from bot.report.markup import fenced, plain
from bot.report import usage as used
from bot.store import AT_WORK, ModelUsage, Usage


def marker(kind: str, key: str) -> str:
    """A hidden marker that lets the bot find its own comment again instead of posting twice."""
    return f"<!-- dispatchbot:{kind}:{key} -->"


def help_text(agents: list[str], label_prefix: str) -> str:
    commands = "\n".join(f"- `{usage}`" for usage in USAGE.values())
    return (
        "**dispatchbot** runs an AI coding agent on this issue or pull request.\n\n"
        f"Commands (one per line, at the start of a line):\n{commands}\n\n"
        f"Agents: {', '.join(f'`{a}`' for a in agents)}. Add `:<model>` to pick a model, "
        f"for example `/dispatch {agents[0] if agents else 'codex'}:<model> fix the tests`.\n"
        f"Labels: add `{label_prefix}<agent>` to an issue to dispatch that agent on it."
    )


def unknown_agent(spec: str, agents: list[str]) -> str:
    return (
        f"I don't know the agent `{spec}`. Known agents: {', '.join(f'`{a}`' for a in agents)}. "
        "Try `/help` for the commands."
    )


def invalid_agent(spec: str, reason: str) -> str:
    return f"`{spec}` can't be used as an agent: {reason}"


def parse_error(error: str) -> str:
    return f"I couldn't read that command: {error}. Try `/help` for the commands."


def refused(login: str, repo: str, action: str) -> str:
    return (
        f"Sorry @{login}, only users with write access to {repo} can {action}. "
        "A maintainer can run the command for you."
    )


def permission_check_refused(repo: str) -> str:
    return (
        f"I can't check who may use me here: the Forge refused to tell me collaborators' permissions on {repo}. "
        "The bot's account needs admin access to the repository; until then I ignore commands from everyone "
        "not listed in `allowed_users`."
    )


def fork_refused(number: int) -> str:
    return (
        f"Pull request #{number} comes from a fork; I only work on branches of this repository, "
        "so I can't push to it. Open the pull request from a branch here, or ask on an issue."
    )


def commands_ignored(limit: int) -> str:
    return f"Only the first {limit} commands of a comment are run; the others were ignored."


def review_needs_pull() -> str:
    return "`/review` works on pull requests; on an issue, use `/dispatch <agent> <task>`."


def nothing_to(action: str) -> str:
    return f"There is no run to {action} here."


STATE_TITLES = {
    "queued": "⏳ queued",
    "preparing": "🛠️ preparing the workspace",
    "running": "🤖 running",
    "qa": "🧪 checking the changes (QA)",
    "harvesting": "📦 collecting the changes",
    "completed": "✅ completed",
    "failed": "❌ failed",
    "blocked": "❓ waiting for an answer",
    "cancelled": "🚫 cancelled",
}


TIME_TRACKING_OFF = "Time tracking is disabled on this repository, so the agent's time is not booked."


def status_asked(login: str, at: float) -> str:
    return f"Shown afresh at {format_time(at)} for @{login}'s `/status`."


def status_comment(
    run, *, queue: str = "", links: str = "", note: str = "", asked: str = "", usage: Usage | None = None,
    now: float = 0.0,
) -> str:
    """The one comment that shows a run's state; edited in place as the run moves on: while the agent
    works, its progress as of ``now``; once it is done, the outcome and the usage line."""
    lines = [
        f"**dispatchbot** run {run.id} · `{run.agent_spec}` · {STATE_TITLES[run.state]}",
        "",
        ("Started through the admin API" if run.trigger == "api" else f"Requested by @{run.requested_by}")
        + (f": {_quote_task(run.task)}" if run.task else "."),
    ]
    if run.state in ("queued", "preparing") and run.reason:  # why it waits (a claim clears it); it may
        lines.append(f"Reason: {plain(run.reason)}")  # quote the Forge's answer or name a user
    if run.state == "queued" and queue:
        lines.append(queue)
    if run.started_at and run.state in AT_WORK:
        lines.append(f"Started at {format_time(run.started_at)} on branch `{run.branch}`.")
        lines += ["", *progress_lines(usage or Usage(), now - run.started_at)]
    if run.state == "completed":
        lines.append(links or "The agent finished with no changes.")
        lines += _summary_lines(run)
    if run.state == "failed":
        lines.append(f"Reason: {run.reason}")
        lines += _summary_lines(run)
        tail_text = run.result.qa_log or run.result.log_tail
        if run.result.violations:
            lines.append(fenced("\n".join(run.result.violations)))  # they name paths the agent chose
        if tail_text:
            lines += ["", "<details><summary>Last lines of the log</summary>", "", fenced(tail_text), "</details>"]
        lines.append("Comment `/retry` to run it again.")
    if run.state == "blocked":
        lines += ["", "The agent needs an answer before it can go on:", "", _quoted_block(run.question), "",
                  "Reply with `/answer <your answer>` to resume on the same branch."]
    if run.state == "cancelled":
        lines.append(run.reason or "Cancelled.")
    if run.state not in AT_WORK and usage and (line := usage_line(usage)):
        lines += ["", line] if lines[-1] else [line]
    lines += egress_lines(run.result.egress)
    if note:
        lines += ["", f"_{note}_"]
    if asked:
        lines += ["", asked]
    lines += ["", marker("run", str(run.id))]
    return "\n".join(lines)


def usage_line(usage: Usage) -> str:
    """What a run's model calls used, for its final comment and its pull request; "" with no call."""
    line = used.usage_line(usage)
    return f"Usage: {line}." if line else ""


def progress_lines(usage: Usage, elapsed: float) -> list[str]:
    """A working run's progress: time, calls, tokens and cost so far, and the agent's last actions
    (its model's text, masked and shortened by the gateway: fenced, so it adds no markup and
    mentions nobody)."""
    lines = [f"**{used.progress_line(usage, elapsed)}**"]
    if usage.actions:
        lines += ["", "Last actions:", fenced("\n".join(used.actions(usage)))]
    return lines


def forge_pause(error: str, until: float) -> str:
    """Why a run that was preparing waits (the reason its status comment shows meanwhile)."""
    return f"the Forge failed while the workspace was prepared ({error}); the run is queued again at {format_time(until)}"


def queue_line(*, frozen: bool, pool: str, paused_until: float, position: int | None, limit: int,
               daily: str = "") -> str:
    """Why a queued run waits, for its status comment (``daily``: a spent daily budget's sentence)."""
    if frozen:
        return "The bot is frozen; the run will start when it is unfrozen."
    if paused_until > time.time():
        return f"Pool `{pool}` is backing off after repeated quick failures until {format_time(paused_until)}."
    if daily:
        return daily
    return f"Position {position} in the queue; pool `{pool}` runs {limit} at a time."


def budget_reached(cap: str, so_far: ModelUsage, priced_usd: float | None = None) -> str:
    """Why a run was stopped at its budget (``cap``: "$2.00", "50,000 tokens", "30 model calls"),
    with what it used: "budget of $2.00 reached after 31 model calls, $2.04 spent (…tokens)". With
    calls of no price, ``priced_usd`` is what the others cost: "at least" that, or "cost unknown"."""
    if so_far.cost_usd is not None:
        spent = f"{used.cost(so_far.cost_usd)} spent"
    else:
        spent = f"at least {used.cost(priced_usd)} spent" if priced_usd else "cost unknown"
    tokens = used.plural(so_far.input_tokens + so_far.output_tokens, "token")
    return f"budget of {cap} reached after {used.plural(so_far.calls, 'model call')}, {spent} ({tokens})"


def daily_budget_spent(whose: str, name: str, cap: float, spent: float, resets_at: float) -> str:
    """Why a queued run waits for the next UTC day, for its status comment."""
    return (f"{whose.capitalize()} `{name}` spent its daily budget of {used.cost(cap)} ({used.cost(spent)} today): the run"
            f" starts when it resets at {format_time(resets_at)}, or once the budget is raised.")


def run_links(run, found: dict[str, str], pull: int | None) -> str:
    """The review, or the pushed commits and their pull request, for a run's status comment."""
    if run.review:
        return f"The review is posted on the pull request: {found['review']}" if "review" in found else ""
    commits = run.result.commits
    if not commits:
        return ""
    listed = fenced("\n".join(commits[:20]))  # their subjects are the agent's text
    pushed = f"Pushed {len(commits)} commit(s) to `{run.result.branch or run.branch}`:\n{listed}"
    if pull is not None:
        return f"Pull request: #{pull} {found['pull_request']}\n\n{pushed}"
    return pushed


def egress_lines(record: dict) -> list[str]:
    """What the run's containers could reach, when it is not the default, and what they were refused."""
    lines = []
    if record.get("mode") == "open":
        lines.append("Egress is open (`egress = \"open\"`): this run's containers could reach the network, "
                     "not only the model gateway.")
    if record.get("credentials_inside"):
        lines.append("This agent's credentials (its credential files, or a key its CLI cannot take from the "
                     "gateway) were inside its container.")
    if record.get("upstream"):
        lines.append(f"Model gateway: {record['upstream']}.")
    if blocked := dict(record.get("blocked") or {}):
        elsewhere = blocked.pop(ELSEWHERE, 0)
        counts = sorted(blocked.items(), key=lambda item: (-item[1], item[0]))
        listed = ", ".join(_refused(dest, n) for dest, n in counts[:10])
        rest = sum(n for _, n in counts[10:]) + elsewhere
        more = f"{', and ' if listed else ''}{rest} more elsewhere" if rest else ""
        lines.append(f"Blocked: {listed}{more}.")
    return ["", *lines] if lines else []


def _refused(what: str, n: int) -> str:
    """A refusal the gateway counted: a proxy's connection (``host:port``) or a model API call it does
    not forward (``POST /v1/files (openai API)``: a method, so a space). Plain: the agent chose both."""
    if " " in what:
        return f"{n} call{'s' if n != 1 else ''} {plain(what)}"
    return f"{n} connection{'s' if n != 1 else ''} to {plain(what)}"


def summary(text: str) -> str:
    """The agent's final message under a short heading, fenced so it stays inside its block."""
    return "**The agent's summary**\n\n" + fenced(text.strip("\n"))


def _summary_lines(run) -> list[str]:
    return ["", summary(run.result.summary), ""] if run.result.summary else []


def _quote_task(task: str) -> str:
    first = task.strip().splitlines()[0] if task.strip() else ""
    return f"“{plain(first[:200])}”"  # an issue's title may be anyone's


def _quoted_block(text: str) -> str:
    """The agent's text quoted, shown as written: its first 40 lines fenced, then quoted (cut
    before fencing, so the fence closes inside the quote)."""
    block = fenced("\n".join(text.strip().splitlines()[:40]))
    return "\n".join(f"> {line}" for line in block.split("\n"))


def format_time(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
