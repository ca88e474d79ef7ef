"""The ``dispatchbot`` command: ``serve`` runs the web process (see the Procfile)."""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from .settings import ENV_PREFIX, Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dispatchbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="receive webhooks and run agents")
    sub.add_parser("check-config", help="validate the settings and print them with secrets hidden")
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as e:
        for err in e.errors():
            print(f"invalid setting {_env_name(err['loc'])}: {err['msg']}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        print(settings.model_dump_json(indent=2))
        return 0
    missing = settings.missing_for_serve()
    if missing:
        for line in missing:
            print(line, file=sys.stderr)
        return 2
    return serve(settings)


def _env_name(loc: tuple) -> str:
    """The environment variable that sets the setting at ``loc``."""
    name = "__".join(str(part).upper() for part in loc)
    return name if name.startswith(ENV_PREFIX) else ENV_PREFIX + name


def serve(settings: Settings) -> int:
    from aiohttp import web

    from . import logs
    from .app import create_app

    logs.setup(settings.secrets())
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
