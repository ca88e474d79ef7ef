"""The ``dispatchbot`` command: ``serve`` runs the web process (see the Procfile)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import re
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from bot.admin import client
from bot.image import command as image_command
from bot.settings import ENV_PREFIX, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dispatchbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="receive webhooks and run agents")
    sub.add_parser("check-config", help="validate the settings and print them with secrets hidden")
    sub.add_parser("doctor", help="check that each agent's image, CLI and key are there; exit 1 if none can run")
    dry = sub.add_parser("dry-run", help="print the prompt and argv a dispatch would get; start nothing")
    dry.add_argument("target", help="owner/repo#number")
    dry.add_argument("agent", help="agent[:model]")
    dry.add_argument("task", nargs="?", default="", help="the task (default: the issue's title)")
    image_command.register(sub)
    client.register(sub)
    sub.add_parser("mcp", help="serve MCP over stdio, as a client of the running bot's admin API")
    store = sub.add_parser("store", help="the store itself").add_subparsers(dest="store_command", required=True)
    copy = store.add_parser("copy", help="copy a SQLite store into an empty PostgreSQL one (moving to replicas)")
    copy.add_argument("--from", dest="source", required=True, help="the SQLite file (data_dir/dispatchbot.sqlite3)")
    copy.add_argument("--to", dest="target", help="the postgresql:// URL (default: the store_url setting)")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as e:
        for err in e.errors():
            print(f"invalid setting {_env_name(err['loc'])}: {err['msg']}", file=sys.stderr)
        return 2
    if args.command == "image":
        return image_command.run(args, settings)
    if args.command == "check-config":
        print(settings.model_dump_json(indent=2))
        return 0
    if args.command == "doctor":
        from bot.admin.doctor import main as doctor

        return doctor(settings)
    if args.command in client.COMMANDS:
        return client.run(args, settings)
    if args.command == "mcp":
        from bot.admin.mcp_server import serve_stdio

        return serve_stdio(settings)
    if args.command == "store":
        return _store_copy(settings, Path(args.source), args.target)
    missing = settings.missing_for_serve()
    if missing:
        for line in missing:
            print(line, file=sys.stderr)
        return 2
    if args.command == "dry-run":
        return _dry_run(settings, args.target, args.agent, args.task)
    return serve(settings)


def _dry_run(settings: Settings, target: str, agent: str, task: str) -> int:
    from bot.runs.dryrun import dry_run_issue

    match = re.fullmatch(r"([^/\s]+)/([^#\s]+)#(\d+)", target)
    if not match:
        print(f"target {target!r} is not of the form owner/repo#number", file=sys.stderr)
        return 2
    owner, repo, number = match[1], match[2], int(match[3])
    argv, prompt = asyncio.run(dry_run_issue(settings, owner, repo, number, agent, task))
    print("argv:", json.dumps(["<prompt>" if arg == prompt else arg for arg in argv]))
    print(prompt)
    return 0


def _store_copy(settings: Settings, source: Path, target: str | None) -> int:
    import asyncpg

    from bot.store.copy import CopyRefused, copy_store

    target = target or (settings.store_url.get_secret_value() if settings.store_url else "")
    if not target.startswith(("postgresql://", "postgres://")):
        print(f"store copy: --to (or {ENV_PREFIX}STORE_URL) must be a postgresql:// URL", file=sys.stderr)
        return 2
    if not source.is_file():
        print(f"store copy: {source}: no such SQLite store", file=sys.stderr)
        return 2
    try:
        counts = asyncio.run(copy_store(source, target))
    except (CopyRefused, OSError, asyncpg.PostgresError) as e:
        print(f"store copy: {e}; nothing was copied", file=sys.stderr)
        return 2
    print("copied: " + ", ".join(f"{n} {table}" for table, n in counts.items()))
    return 0


def _env_name(loc: tuple) -> str:
    """The environment variable that sets the setting at ``loc``."""
    name = "__".join(str(part).upper() for part in loc)
    return name if name.startswith(ENV_PREFIX) else ENV_PREFIX + name


def serve(settings: Settings) -> int:
    from aiohttp import web

    from bot import logs
    from bot.app import create_app

    logs.setup(settings.secrets())
    logging.getLogger("dispatchbot").info(
        "serving on %s:%s for %s; data in %s", settings.host, settings.port, settings.forge_url, settings.data_dir
    )
    app = create_app(settings)
    app.on_startup.append(_freeze_heap)  # after the services started (the app's cleanup context)
    app.on_shutdown.append(_stop_once)
    # No access log: refused deliveries are logged by the app, and a line per delivery costs throughput.
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    return 0


async def _stop_once(_app: object) -> None:
    """Once stopping, a further SIGTERM or Ctrl-C is noted, not obeyed: it would cut the stop short
    and leave the network, its firewall chains and the holders until the next start."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, logging.getLogger("dispatchbot").info, "stopping already; a moment")


async def _freeze_heap(_app: object) -> None:
    """Keep what startup built (modules, settings, schemas: about 90,000 objects, all alive for the
    whole process) out of the garbage collector's full passes. Under a stream of webhooks such a
    pass comes every few seconds and holds the event loop 15 to 80 ms scanning them, which is the
    tail of the webhook's answer times; with them frozen it scans only what was made since."""
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
