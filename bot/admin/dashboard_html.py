"""The dashboard's HTML, rendered on the server from plain values; every value is escaped.

Task texts, reasons, questions and logs come from users and agents, so nothing is trusted: each
value goes through ``_e`` (or ``_link``, which also refuses non-HTTP URLs). The only scripts are the
run page's few lines of EventSource, which add log lines and fill the usage section with text
nodes, never with markup. Usage is worded by ``bot.report.usage``, as on the Forge.
"""

from __future__ import annotations

import datetime
import html
from collections.abc import Iterable

from bot.admin.replicas import ReplicaView
from bot.admin.usage import UsageTotals
from bot.report.usage import actions as usage_actions
from bot.report.usage import brief, cost, count, duration, progress_line, usage_line, waited
from bot.store.policy import Hold
from bot.store.pools import PoolView
from bot.store import AT_WORK, Run, StateChange, Usage

STYLE = """
:root { --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       background: var(--bg); }
header { background: #24292f; color: #fff; padding: 10px 24px; display: flex; gap: 16px; align-items: baseline; }
header a { color: #fff; text-decoration: none; font-weight: 600; font-size: 16px; }
header .note { color: #c9d1d9; font-size: 13px; }
main { max-width: 1200px; margin: 0 auto; padding: 16px 24px 40px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 6px; margin: 16px 0; }
h2 { font-size: 15px; margin: 0; padding: 10px 14px; border-bottom: 1px solid var(--line); }
h2 .count { color: var(--muted); font-weight: normal; }
table { width: 100%; border-collapse: collapse; }
th, td { text-align: left; padding: 6px 14px; border-top: 1px solid #eaeef2; vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; border-top: none; }
td.num { font-variant-numeric: tabular-nums; }
.empty { color: var(--muted); padding: 10px 14px; }
a { color: var(--accent); }
.task { max-width: 420px; overflow-wrap: anywhere; }
.pill { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
        background: #eaeef2; color: var(--fg); white-space: nowrap; }
.queued { background: #ddf4ff; color: #0550ae; }
.preparing, .qa, .harvesting { background: #fff8c5; color: #7d4e00; }
.running { background: #dafbe1; color: #116329; }
.completed { background: #1f883d; color: #fff; }
.failed { background: #cf222e; color: #fff; }
.blocked { background: #bf8700; color: #fff; }
.cancelled { background: #6e7781; color: #fff; }
.frozen { background: #ddf4ff; color: #0550ae; }
.paused { background: #ffebe9; color: #a40e26; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; padding: 10px 14px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
pre { margin: 0; padding: 10px 14px; white-space: pre-wrap; overflow-wrap: anywhere;
      font: 12px/1.5 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre.log { background: #0d1117; color: #e6edf3; border-radius: 0 0 6px 6px; min-height: 4.5em; max-height: 560px;
          overflow-y: auto; }
#log-state { color: var(--muted); font-weight: normal; font-size: 12px; margin-left: 8px; }
.hold { color: #a40e26; font-size: 12px; }
table.models:has(tbody:empty) { display: none; }
.headline { padding: 10px 14px; font-weight: 600; }
h3 { font-size: 13px; color: var(--muted); margin: 0; padding: 8px 14px 0; }
pre.actions { background: var(--bg); border-top: 1px solid #eaeef2; }
"""

# Appends each log line as text; at most MAX lines stay in the page. Reloads when the run ends.
LOG_SCRIPT = """
const log = document.getElementById("log"), state = document.getElementById("log-state"), MAX = 1000;
const source = new EventSource(log.dataset.src);
source.onmessage = (e) => {
  const follow = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
  const line = document.createElement("div");
  line.className = "line";
  line.textContent = e.data;
  log.appendChild(line);
  while (log.childElementCount > MAX) log.firstElementChild.remove();
  if (follow) log.scrollTop = log.scrollHeight;
  state.textContent = "live";
};
source.addEventListener("end", (e) => {
  source.close();
  state.textContent = "the run ended: " + e.data;
  setTimeout(() => location.reload(), 1500);
});
"""


# Fills the usage section from each "usage" event (JSON: line, models, actions) as text, until "end".
USAGE_SCRIPT = """
const usage = document.getElementById("usage");
const usageSource = new EventSource(usage.dataset.src);
usageSource.addEventListener("usage", (e) => {
  const u = JSON.parse(e.data);
  document.getElementById("usage-line").textContent = u.line;
  document.getElementById("usage-rows").replaceChildren(...u.models.map((row) => {
    const tr = document.createElement("tr");
    for (const cell of row) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.appendChild(td);
    }
    return tr;
  }));
  document.getElementById("usage-actions").textContent = u.actions.join("\\n") || "None yet.";
});
usageSource.addEventListener("end", () => usageSource.close());
"""
USAGE_HEADERS = ("model", "calls", "tokens in", "cached", "out", "reasoning", "cost", "waiting on it")


Links = dict[str, str]  # a run's places on the Forge, as bot.links names them


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _link(url: str, text: str) -> str:
    if not url.startswith(("https://", "http://")):
        return _e(text)
    return f'<a href="{_e(url)}" rel="noreferrer">{_e(text)}</a>'


def _when(at: float | None) -> str:
    if not at:
        return ""
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(text: str, limit: int = 200) -> str:
    """A task as the main page lists it; the run's page has all of it."""
    return _e(text if len(text) <= limit else text[: limit - 1] + "…")


def _pill(state: str) -> str:
    return f'<span class="pill {_e(state)}">{_e(state)}</span>'


def _run_ref(run: Run) -> str:
    return f'<a href="/runs/{run.id}">#{run.id}</a>'


def _target(run: Run, links: Links) -> str:
    for kind in ("branch", "tag"):  # a run with no issue
        if kind in links:
            return _link(links[kind], f"{run.owner}/{run.repo} {kind} {run.options.get('ref', '')}")
    return _link(links["issue"], f"{run.owner}/{run.repo} {'PR' if run.is_pull else 'issue'} #{run.number}")


def _page(title: str, body: str, nonce: str, *, refresh: int | None = None, script: str = "") -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    tail = f'<script nonce="{_e(nonce)}">{script}</script>' if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{meta}<title>{_e(title)}</title><style nonce=\"{_e(nonce)}\">{STYLE}</style></head><body>"
        f'<header><a href="/">dispatchbot</a><span class="note">{_e(title)}</span></header>'
        f"<main>{body}</main>{tail}</body></html>"
    )


def _section(title: str, count: int | None, table: str) -> str:
    counted = f' <span class="count">({count})</span>' if count is not None else ""
    return f"<section><h2>{_e(title)}{counted}</h2>{table}</section>"


def _table(headers: Iterable[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<div class="empty">{_e(empty)}</div>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def main_page(
    *,
    now: float,
    frozen: bool,
    max_running: int,
    pools: list[PoolView],
    replicas: list[ReplicaView],
    queue: list[tuple[int, Run, Links]],
    holds: dict[int, Hold],
    resets_at: float,
    queued_total: int,
    active: list[tuple[Run, Links]],
    recent: list[tuple[Run, Links]],
    usage: dict[int, Usage],
    totals: UsageTotals,
    nonce: str,
) -> str:
    status = (
        '<span class="pill frozen">frozen: nothing starts</span>'
        if frozen
        else '<span class="pill running">accepting</span>'
    )
    overview = (
        f"<section><h2>Bot</h2><dl><dt>state</dt><dd>{status}</dd>"
        f"<dt>runs at once</dt><dd>{len(active)} of {max_running}</dd>"
        f"<dt>queued</dt><dd>{queued_total}</dd><dt>as of</dt><dd>{_e(_when(now))}</dd></dl></section>"
    )
    pool_rows = []
    for p in pools:
        flags = []
        if p.frozen:
            flags.append('<span class="pill frozen">frozen</span>')
        if p.backoff_until:
            flags.append(f'<span class="pill paused">backing off until {_e(_when(p.backoff_until))}</span>')
        if p.daily_spent:
            flags.append(f'<span class="pill paused">daily budget spent until {_e(_when(resets_at))}</span>')
        daily = "—" if p.daily_usd is None else f"{cost(p.spent_today_usd or 0.0)} of {cost(p.daily_usd)} today"
        pool_rows.append([
            _e(p.name), f'<span class="num">{p.active} / {p.limit}</span>', str(p.queued), _e(daily),
            " ".join(flags) or "—",
        ])
    pools_table = _table(["pool", "active / limit", "queued", "daily budget", "state"], pool_rows,
                         "No pool has been used yet.")
    pools_html = _section("Pools", len(pools), pools_table)
    replicas_html = _section("Replicas", len(replicas), _replicas_table(replicas, now))
    active_rows = [
        [
            _run_ref(run), _pill(run.state), _e(run.agent_spec), _target(run, links),
            f'<div class="task">{_short(run.task)}</div>', duration(now - (run.started_at or run.updated_at)),
            _e(brief(usage.get(run.id, Usage()))),
        ]
        for run, links in active
    ]
    active_html = _section(
        "Running", len(active),
        _table(["run", "state", "agent", "on", "task", "elapsed", "model usage"], active_rows, "Nothing is running."),
    )
    queue_rows = [
        [str(position), _run_ref(run), _e(run.agent_spec), _e(run.pool), _target(run, links),
         f'<div class="task">{_short(run.task)}</div>', duration(now - run.created_at) + _held(holds.get(run.id), resets_at)]
        for position, run, links in queue
    ]
    more = queued_total - len(queue)
    queue_table = _table(["#", "run", "agent", "pool", "on", "task", "waiting"], queue_rows, "The queue is empty.")
    if more > 0:
        queue_table += f'<div class="empty">… and {more} more</div>'
    queue_html = _section("Queue", queued_total, queue_table)
    recent_rows = [
        [
            _run_ref(run), _pill(run.state), _e(run.agent_spec), _target(run, links), _outcome_links(links),
            f'<div class="task">{_short(run.reason or run.task)}</div>', _e(brief(usage.get(run.id, Usage()))),
            _e(_when(run.ended_at)),
        ]
        for run, links in recent
    ]
    recent_table = _table(
        ["run", "outcome", "agent", "on", "links", "reason / task", "model usage", "ended"], recent_rows,
        "No run has ended yet.",
    )
    recent_html = _section("Recent outcomes", None, recent_table)
    body = overview + pools_html + replicas_html + active_html + queue_html + recent_html + _totals_section(totals)
    return _page("overview", body, nonce, refresh=10)


def _replicas_table(replicas: list[ReplicaView], now: float) -> str:
    rows = [
        [
            _e(r.id) + (" (this one)" if r.this else ""), _e(r.host),
            '<span class="pill running">alive</span>' if r.alive else '<span class="pill frozen">lost</span>',
            f"{duration(now - r.seen_at)} ago", f'<span class="num">{len(r.runs)} / {r.max_running}</span>',
            " ".join(f'<a href="/runs/{n}">#{n}</a>' for n in r.runs) or "—",
        ]
        for r in replicas
    ]
    return _table(["replica", "host", "state", "last heartbeat", "runs / limit", "its runs"], rows, "No replica yet.")


def _held(hold: Hold | None, resets_at: float) -> str:
    if hold is None:
        return ""
    return (f'<div class="hold">daily budget of {_e(hold.whose)} {_e(hold.name)} spent: '
            f'{_e(cost(hold.spent))} of {_e(cost(hold.cap))}; waits until {_e(_when(resets_at))}</div>')


def _outcome_links(links: Links) -> str:
    found = []
    if pull := links.get("pull_request"):
        number = pull.rpartition("/")[2]  # a pull request's page ends with its number
        found.append(_link(pull, f"PR #{number}" if number.isdigit() else "pull request"))
    if review := links.get("review"):
        found.append(_link(review, "review"))
    if comment := links.get("status_comment"):
        found.append(_link(comment, "status comment"))
    return " · ".join(found) or "—"


def run_page(
    *, run: Run, links: Links, history: list[StateChange], log_tail: str, live: bool, position: int | None,
    usage: Usage, now: float, nonce: str,
) -> str:
    state = _pill(run.state) + (f" position {position} in the queue" if position else "")
    facts = [
        ("state", state),
        ("agent", _e(run.agent_spec) + f" (pool {_e(run.pool)})"),
        ("on", _target(run, links)),
        ("requested by", _e(run.requested_by) + f" via {_e(run.trigger)}"),
        ("branch", _e(run.branch or "—")),
        ("task", _e(run.task or "—")),
    ]
    if run.reason:
        facts.append(("reason", _e(run.reason)))
    if run.question:
        facts.append(("question", f"<pre>{_e(run.question)}</pre>"))
    if run.started_at and run.state not in AT_WORK:  # at work, the usage section's live line says it
        end = run.ended_at or now
        facts.append(("ran for" if run.ended_at else "worked for", duration(end - run.started_at)))
    facts.append(("links", _outcome_links(links)))
    summary = "<section><h2>Run #%d</h2><dl>%s</dl></section>" % (
        run.id, "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in facts)
    )
    rows = [
        [_e(_when(t.at)), _pill(t.from_state) if t.from_state else "—", _pill(t.to_state), _e(t.reason)]
        for t in history
    ]
    history_html = _section("Transitions", len(history), _table(["at", "from", "to", "reason"], rows, "None."))
    summary += _usage_section(run, usage, now, live)
    if live:
        log_html = (
            '<section><h2>Log<span id="log-state">waiting for output…</span></h2>'
            f'<pre class="log" id="log" data-src="/runs/{run.id}/log"></pre></section>'
        )
        return _page(f"run #{run.id}", summary + history_html + log_html, nonce, script=LOG_SCRIPT + USAGE_SCRIPT)
    log_html = _section("Log (last lines)", None, f'<pre class="log">{_e(log_tail)}</pre>' if log_tail else
                        '<div class="empty">No log was kept for this run.</div>')
    return _page(f"run #{run.id}", summary + history_html + log_html, nonce)


def usage_headline(run: Run, usage: Usage, now: float) -> str:
    """The progress while the agent works, as the status comment says it; else the usage line."""
    if run.state in AT_WORK and run.started_at:
        return progress_line(usage, now - run.started_at)
    return usage_line(usage) or "No model call."


def usage_rows(usage: Usage) -> list[list[str]]:
    """Each model's share, as text (the live script fills the same cells)."""
    return [
        [m.model or "—", count(m.calls), count(m.input_tokens), count(m.cached_tokens), count(m.output_tokens),
         count(m.reasoning_tokens), cost(m.cost_usd), waited(m.wait_seconds)]
        for m in usage.by_model
    ]


def _usage_section(run: Run, usage: Usage, now: float, live: bool) -> str:
    """The run's usage by model and the agent's last actions; while it lives, kept up to date by
    ``USAGE_SCRIPT`` from ``/runs/<id>/usage``."""
    src = f' data-src="/runs/{run.id}/usage"' if live else ""
    head = "".join(f"<th>{_e(h)}</th>" for h in USAGE_HEADERS)
    rows = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in usage_rows(usage))
    actions = "\n".join(usage_actions(usage)) or "None yet."
    actions_html = (f'<h3>Last actions of the agent</h3><pre class="actions" id="usage-actions">{_e(actions)}</pre>'
                    if live or usage.actions else "")
    return (
        f'<section id="usage"{src}><h2>Model usage</h2>'
        f'<div class="headline" id="usage-line">{_e(usage_headline(run, usage, now))}</div>'
        f'<table class="models"><thead><tr>{head}</tr></thead><tbody id="usage-rows">{rows}</tbody></table>'
        f"{actions_html}</section>"
    )


def _totals_section(totals: UsageTotals) -> str:
    rows = [
        [_e(period), _e(t.repo), _e(t.agent), str(t.runs), count(t.usage.total.calls),
         count(t.usage.total.input_tokens), count(t.usage.total.cached_tokens), count(t.usage.total.output_tokens),
         _e(cost(t.usage.total.cost_usd))]
        for period, listed in (("last day", totals.day), ("last week", totals.week)) for t in listed
    ]
    headers = ["period", "repository", "agent", "runs", "model calls", "tokens in", "cached", "out", "cost"]
    return _section("Model usage", None, _table(headers, rows, "No model call in the last week."))


def denied(message: str, nonce: str) -> str:
    return _page("sign in", f'<section><div class="empty">{_e(message)}</div></section>', nonce)
