"""The CLI's operator commands (``dispatchbot runs``, ``show``, ``dispatch``...): a client of the admin API.

The bot's URL and token come from the settings (``api_url``, ``admin_token``) or their environment
variables ``DISPATCHBOT_API_URL`` and ``DISPATCHBOT_ADMIN_TOKEN``; the URL defaults to this host's
port. Output is a readable table, or the API's JSON with ``--json``.

Exit codes: 0 done; 1 the bot refused or failed the operation (no such run, wrong state, Forge
down); 2 bad input (usage, or the API's 400); 3 the bot is unreachable or the token is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from bot.settings import Settings
from bot.store import TERMINAL

OK, FAILED, BAD_INPUT, UNREACHABLE = 0, 1, 2, 3


class ApiError(Exception):
    """A refusal from the API (``status`` is its HTTP status; 0 when the bot did not answer)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    @property
    def exit_code(self) -> int:
        if self.status in (0, 401):
            return UNREACHABLE
        return BAD_INPUT if self.status == 400 else FAILED


class ApiClient:
    """The admin API over HTTP; each method returns the API's JSON answer or raises ApiError."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiClient:
        url = settings.api_url or f"http://127.0.0.1:{settings.port}"
        token = settings.admin_token.get_secret_value() if settings.admin_token else ""
        return cls(url, token)

    async def request(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        params = {k: str(v) for k, v in query.items() if v is not None}
        try:
            async with aiohttp.ClientSession(timeout=self._timeout) as session:
                async with session.request(
                    method, f"{self.url}/api{path}", json=body, params=params, headers=self._headers
                ) as resp:
                    try:
                        answer = await resp.json(content_type=None)
                    except ValueError:
                        answer = {"error": f"HTTP {resp.status} from {self.url}: not the admin API"}
                    if resp.status >= 300:
                        raise ApiError(resp.status, answer.get("error", f"HTTP {resp.status}"))
                    return answer
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(0, f"cannot reach the bot at {self.url}: {e or type(e).__name__}") from None

    async def runs(self, state: str | None = None, repo: str | None = None, agent: str | None = None) -> Any:
        return await self.request("GET", "/runs", state=state, repo=repo, agent=agent)

    async def show(self, run_id: int) -> Any:
        return await self.request("GET", f"/runs/{run_id}")

    async def log(self, run_id: int) -> Any:
        return await self.request("GET", f"/runs/{run_id}/log")

    async def cancel(self, run_id: int) -> Any:
        return await self.request("POST", f"/runs/{run_id}/cancel")

    async def retry(self, run_id: int) -> Any:
        return await self.request("POST", f"/runs/{run_id}/retry")

    async def answer(self, run_id: int, text: str) -> Any:
        return await self.request("POST", f"/runs/{run_id}/answer", {"text": text})

    async def pools(self) -> Any:
        return await self.request("GET", "/pools")

    async def replicas(self) -> Any:
        return await self.request("GET", "/replicas")

    async def freeze(self, frozen: bool, pool: str | None = None) -> Any:
        return await self.request("POST", "/freeze" if frozen else "/thaw", {"pool": pool})

    async def poke(self) -> Any:
        return await self.request("POST", "/poke")

    async def dispatch(self, inp: dict[str, Any]) -> Any:
        return await self.request("POST", "/dispatch", inp)


# The commands ---------------------------------------------------------------------------------

COMMANDS = ("runs", "show", "logs", "cancel", "retry", "answer", "pools", "replicas", "freeze", "thaw", "poke",
            "dispatch")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the operator commands to ``dispatchbot``'s parser."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print the API's JSON answer")
    runs = sub.add_parser("runs", parents=[common], help="list runs (newest first)")
    runs.add_argument("--state", help="a state, or 'live' for queued and working runs")
    runs.add_argument("--repo", help="owner/name")
    runs.add_argument("--agent")
    for name, text in (("show", "a run: transitions, links, log tail"), ("cancel", "cancel a run"),
                       ("retry", "run a failed or cancelled run again")):
        sub.add_parser(name, parents=[common], help=text).add_argument("run", type=int)
    logs = sub.add_parser("logs", parents=[common], help="a run's log tail")
    logs.add_argument("run", type=int)
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    answer = sub.add_parser("answer", parents=[common], help="answer a blocked run's question")
    answer.add_argument("run", type=int)
    answer.add_argument("text")
    sub.add_parser("pools", parents=[common], help="pools: limits, load, frozen, backoff")
    sub.add_parser("replicas", parents=[common], help="replicas: host, last heartbeat, alive or lost, limit, runs")
    for name in ("freeze", "thaw"):
        p = sub.add_parser(name, parents=[common], help=f"{name} the bot, or one pool")
        p.add_argument("pool", nargs="?")
    sub.add_parser("poke", parents=[common], help="drain the queue now")
    d = sub.add_parser("dispatch", parents=[common], help="dispatch an agent through the API")
    d.add_argument("--repo", required=True, help="owner/name (or name with --org)")
    d.add_argument("--org")
    d.add_argument("--task", default="")
    d.add_argument("--agent", default="codex", help="agent[:model]")
    where = d.add_mutually_exclusive_group(required=True)
    where.add_argument("--issue", type=int)
    where.add_argument("--pr", type=int)
    where.add_argument("--branch")
    where.add_argument("--tag")
    d.add_argument("--template")
    d.add_argument("--plan-template")
    d.add_argument("--persona")
    d.add_argument("--var", action="append", default=[], metavar="KEY=VALUE", help="a variable (repeatable)")
    d.add_argument("--dry-run", action="store_true", help="print the prompt and argv; start nothing")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run one operator command; returns its exit code."""
    client = ApiClient.from_settings(settings)
    try:
        return asyncio.run(_run(client, args))
    except ApiError as e:
        print(f"dispatchbot: {e}", file=sys.stderr)
        return e.exit_code
    except ValueError as e:
        print(f"dispatchbot: {e}", file=sys.stderr)
        return BAD_INPUT


async def _run(client: ApiClient, args: argparse.Namespace) -> int:
    c = args.command
    if c == "logs" and args.follow:
        return await _follow(client, args.run)
    if c == "runs":
        answer = await client.runs(args.state, args.repo, args.agent)
    elif c in ("show", "cancel", "retry"):
        answer = await getattr(client, c)(args.run)
    elif c == "logs":
        answer = await client.log(args.run)
    elif c == "answer":
        answer = await client.answer(args.run, args.text)
    elif c == "pools":
        answer = await client.pools()
    elif c == "replicas":
        answer = await client.replicas()
    elif c in ("freeze", "thaw"):
        answer = await client.freeze(c == "freeze", args.pool)
    elif c == "poke":
        answer = await client.poke()
    else:
        answer = await client.dispatch(_dispatch_input(args))
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(_render(c, answer))
    return OK


def _dispatch_input(args: argparse.Namespace) -> dict[str, Any]:
    variables = {}
    for item in args.var:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--var {item!r} is not KEY=VALUE")
        variables[key] = value
    fields = ("repo", "org", "task", "agent", "issue", "pr", "branch", "tag", "template", "plan_template", "persona")
    inp = {name: getattr(args, name) for name in fields if getattr(args, name) not in (None, "")}
    return inp | {"variables": variables, "dry_run": args.dry_run}


async def _follow(client: ApiClient, run_id: int, interval: float = 1.0) -> int:
    """Print the log as it grows until the run reaches a state no agent works in."""
    printed = ""
    while True:
        answer = await client.log(run_id)
        text = answer["log"]
        anchor = printed[-200:]
        at = text.rfind(anchor) if anchor else -1
        new = text[at + len(anchor):] if at >= 0 else text
        if new:
            sys.stdout.write(new)
            sys.stdout.flush()
        printed = text
        if answer["state"] in TERMINAL:
            print(f"\n[run {run_id} {answer['state']}]")
            return OK
        await asyncio.sleep(interval)


# Rendering ----------------------------------------------------------------------------------


def _render(command: str, answer: Any) -> str:
    if command == "runs" or command == "poke":
        return _table(answer, ["id", "state", "agent", "repo", "number", "requested_by", "created_at", "task"])
    if command in ("pools", "freeze", "thaw"):
        head = f"bot: {'FROZEN' if answer['frozen'] else 'running'}, at most {answer['max_running']} runs at once"
        return head + "\n" + _table(answer["pools"], ["name", "limit", "active", "queued", "frozen", "backoff_until"])
    if command == "replicas":
        head = f"cluster: at most {answer['max_running']} runs at once; a replica silent {answer['ttl']:.0f} s is lost"
        return head + "\n" + _table(answer["replicas"], ["id", "host", "alive", "seen_at", "max_running", "runs", "this"])
    if command == "logs":
        return answer["log"]
    if command == "dispatch":
        if answer.get("prompt") is not None:
            return f"argv: {json.dumps(answer['argv'])}\n\n{answer['prompt']}"
        return _fields(answer, ["run_id", "state", "agent", "repo", "workspace_dir", "output_file", "message"])
    if command == "show":
        lines = [_fields(answer, ["id", "state", "reason", "agent", "repo", "number", "branch", "task",
                                  "requested_by", "question", "answer"])]
        lines += ["", "transitions:"] + [f"  {t['from_state'] or '-'} -> {t['to_state']}  {t['reason']}"
                                         for t in answer["transitions"]]
        lines += ["", "links:"] + [f"  {k}: {v}" for k, v in answer["links"].items()]
        lines += _usage_lines(answer.get("usage"))
        if answer["log_tail"]:
            lines += ["", "log tail:", answer["log_tail"].rstrip()]
        return "\n".join(lines)
    return _fields(answer, ["id", "state", "agent", "repo", "number", "reason"])


def _usage_lines(usage: dict[str, Any] | None) -> list[str]:
    """A run's usage: the line in words, each model's share, the agent's last actions."""
    if not usage or not usage["total"]["calls"]:
        return []
    models = _table(usage["by_model"], ["model", "calls", "input_tokens", "cached_tokens", "output_tokens",
                                        "reasoning_tokens", "cost_usd", "wait_seconds"])
    lines = ["", f"usage: {usage['line']}", *(f"  {row}" for row in models.splitlines())]
    if usage["actions"]:
        lines += ["", "last actions:", *(f"  {a}" for a in usage["actions"])]
    return lines


def _cell(value: Any) -> str:
    if isinstance(value, float) and value > 1e9:  # an epoch time
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    text = "-" if value is None else str(value)
    return text if len(text) <= 50 else text[:49] + "…"


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def _fields(answer: dict[str, Any], names: list[str]) -> str:
    shown = [(n, answer.get(n)) for n in names if answer.get(n) not in (None, "")]
    width = max((len(n) for n, _ in shown), default=0)
    return "\n".join(f"{n.ljust(width)}  {v}" for n, v in shown)
