"""``dispatchbot image build`` and ``dispatchbot image dockerfile``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiodocker

from bot.settings import Settings
from bot.image.build import ImageBuildError, Recipe, build
from bot.image.recipe import Manifest, dockerfile

# Where Debian keeps the CA certificates an administrator added (update-ca-certificates reads them).
HOST_CA_CERTS = Path("/usr/local/share/ca-certificates")


def register(sub: argparse._SubParsersAction) -> None:
    image = sub.add_parser("image", help="build the agent image, or print its Dockerfile")
    commands = image.add_subparsers(dest="image_command", required=True)
    b = commands.add_parser(
        "build", help="build dispatchbot-agent:<recipe hash> and tag it latest; nothing to do when it exists"
    )
    b.add_argument(
        "--ca-cert", action="append", default=[], type=Path, metavar="FILE",
        help="an extra CA certificate (PEM) to trust, for a proxy that re-signs TLS; repeatable "
             f"(default: those this host trusts, {HOST_CA_CERTS}/*.crt)",
    )
    b.add_argument("--no-host-ca-certs", action="store_true", help="do not trust this host's extra CA certificates")
    b.add_argument("--coderabbit", type=Path, metavar="FILE", help="CodeRabbit's CLI (the binary or its zip)")
    b.add_argument("--mirror", help="the Debian mirror for the base (default: the one apt uses)")
    commands.add_parser("dockerfile", help="print the Dockerfile generated from the image manifest")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.image_command == "dockerfile":
        print(dockerfile(Manifest.load()), end="")
        return 0
    try:
        recipe = Recipe.load(ca_certs(args.ca_cert, use_host=not args.no_host_ca_certs), args.coderabbit)
    except (OSError, ImageBuildError) as e:
        print(f"image: {e}", file=sys.stderr)
        return 2
    return asyncio.run(_build(settings, recipe, args.mirror))


def ca_certs(given: list[Path], *, use_host: bool) -> list[Path]:
    """The CA certificates to trust: those given, else the host's extra ones. A network whose proxy
    re-signs TLS fails the build (curl's error 60) without them, and the host already trusts them."""
    if given or not use_host:
        return given
    found = sorted(HOST_CA_CERTS.glob("*.crt")) if HOST_CA_CERTS.is_dir() else []
    if found:
        print(f"image: trusting this host's extra CA certificates: {', '.join(p.name for p in found)}", flush=True)
    return found


async def _build(settings: Settings, recipe: Recipe, mirror: str | None) -> int:
    started = time.monotonic()
    docker = aiodocker.Docker(url=settings.docker_url)
    try:
        image = await build(docker, recipe, lambda line: print(f"image: {line}", flush=True), mirror=mirror)
    except (ImageBuildError, aiodocker.DockerError) as e:
        print(f"image: build failed: {e}", file=sys.stderr)
        return 1
    finally:
        await docker.close()
    print(f"image: {image.tag} (also :latest), {image.size / 1e6:.0f} MB, {time.monotonic() - started:.0f} s")
    for cli, version in image.clis.items():
        print(f"image:   {cli} {version}")
    return 0
