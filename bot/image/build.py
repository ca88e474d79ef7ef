"""Builds the agent image with nothing but Debian packages and npm: no image registry.

A minimal Debian made with ``debootstrap`` is imported as the base (``dispatchbot-base:<suite>``, made
once), the generated Dockerfile is built on it, each CLI's ``--version`` is checked inside the result,
and the image is labelled and tagged ``dispatchbot-agent:<recipe hash>`` and ``:latest``. The hash
covers everything that shapes the image, so an existing tag means there is nothing to build.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import re
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import aiodocker

from .recipe import CLIS_LABEL, MANIFEST, RECIPE_LABEL, Manifest, dockerfile

REPO = "dispatchbot-agent"
BASE_REPO = "dispatchbot-base"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
CODERABBIT = "coderabbit"
_VERSION = re.compile(r"\d+\.\d+\.\d+[\w.+-]*")

Say = Callable[[str], None]


class ImageBuildError(Exception):
    """The image could not be built; the message says which step failed and why."""


@dataclass(frozen=True)
class Recipe:
    """Everything that shapes the image; ``hash`` names it."""

    manifest_text: str
    ca_certs: tuple[bytes, ...] = ()
    coderabbit: bytes | None = None
    manifest: Manifest = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "manifest", Manifest.load(self.manifest_text))

    @classmethod
    def load(cls, ca_certs: Iterable[Path] = (), coderabbit: Path | None = None) -> Recipe:
        return cls(
            manifest_text=MANIFEST.read_text(),
            ca_certs=tuple(sorted(p.read_bytes() for p in ca_certs)),
            coderabbit=_coderabbit_binary(coderabbit) if coderabbit else None,
        )

    @property
    def dockerfile(self) -> str:
        return dockerfile(self.manifest)

    @property
    def hash(self) -> str:
        h = hashlib.sha256()
        parts = [self.manifest_text.encode(), self.dockerfile.encode(), (files("bot.image") / "build.py").read_bytes()]
        parts += [b"ca", *self.ca_certs, b"coderabbit", self.coderabbit or b""]
        for part in parts:
            h.update(len(part).to_bytes(8, "big") + part)
        return h.hexdigest()[:12]

    @property
    def clis(self) -> list[str]:
        return [*self.manifest.clis, *([CODERABBIT] if self.coderabbit else [])]


@dataclass(frozen=True)
class Image:
    """A built agent image, as ``dispatchbot image build`` reports it."""

    tag: str
    id: str
    size: int
    clis: dict[str, str]
    cached: bool


def _coderabbit_binary(path: Path) -> bytes:
    """The CLI from its vendor's download: the binary itself, or the zip that holds it."""
    data = path.read_bytes()
    if not data.startswith(b"PK"):
        return data
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        names = [n for n in z.namelist() if n.rsplit("/", 1)[-1] == CODERABBIT]
        if not names:
            raise ImageBuildError(f"{path} is a zip without a file named {CODERABBIT}")
        return z.read(names[0])


def apt_mirror(suite: str, root: Path = Path("/")) -> str | None:
    """The Debian mirror this machine's apt uses for ``suite`` (deb822 or one-line sources)."""
    sources = root / "etc/apt"
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            lines = [line for line in stanza.splitlines() if ":" in line and not line.startswith("#")]
            fields = {k.strip(): v.split() for k, v in (line.split(":", 1) for line in lines)}
            if "deb" in fields.get("Types", []) and suite in fields.get("Suites", []) and fields.get("URIs"):
                return fields["URIs"][0]
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]:
        if path.exists():
            for line in path.read_text().splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1]
    return None


def apt_sources(suite: str, mirror: str) -> str:
    """The base's ``sources.list``: ``suite`` and its updates, and security updates where the host has them."""
    lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
    if security := apt_mirror(f"{suite}-security"):
        lines.append(f"deb {security} {suite}-security main")
    return "\n".join(lines) + "\n"


async def build(
    docker: aiodocker.Docker, recipe: Recipe, say: Say, *, mirror: str | None = None, latest: bool = True
) -> Image:
    """The image for ``recipe``: found by its tag, or built now; either way tagged ``latest`` if asked."""
    tag = f"{REPO}:{recipe.hash}"
    image = await _inspect(docker, tag)
    cached = image is not None
    if image is None:
        await _make(docker, recipe, tag, say, mirror)
        image = await docker.images.inspect(tag)
    else:
        say(f"{tag} exists: nothing to build")
    if latest:
        await docker.images.tag(tag, REPO, tag="latest")
    clis = json.loads(image["Config"]["Labels"][CLIS_LABEL])
    return Image(tag=tag, id=image["Id"], size=image["Size"], clis=clis, cached=cached)


async def _make(docker: aiodocker.Docker, recipe: Recipe, tag: str, say: Say, mirror: str | None) -> None:
    """Base, Dockerfile, CodeRabbit when given, a version check, then the labels and ``tag``."""
    suite = recipe.manifest.base.suite
    base = await _base(docker, suite, mirror or apt_mirror(suite) or DEFAULT_MIRROR, say)
    say(f"building {tag} on {base}")
    ca_certs = "\n".join(c.decode().strip() for c in recipe.ca_certs)
    image_id = await _build(
        docker, {"Dockerfile": recipe.dockerfile.encode()}, say, buildargs={"BASE": base, "EXTRA_CA_CERTS": ca_certs}
    )
    if recipe.coderabbit:
        say("adding coderabbit")
        dockerfile = f"FROM {image_id}\nCOPY {CODERABBIT} /usr/local/bin/{CODERABBIT}\n"
        image_id = await _build(docker, {"Dockerfile": dockerfile.encode(), CODERABBIT: recipe.coderabbit}, say)
    clis = await _versions(docker, image_id, recipe.clis)
    say("versions: " + ", ".join(f"{k} {v}" for k, v in clis.items()))
    wrong = {k: v for k, v in recipe.manifest.pinned().items() if clis.get(k) != v}
    if wrong:
        raise ImageBuildError(f"CLI versions differ from the manifest's pins {wrong}: the image has {clis}")
    labels = {RECIPE_LABEL: recipe.hash, CLIS_LABEL: json.dumps(clis, separators=(",", ":"))}
    await _build(docker, {"Dockerfile": f"FROM {image_id}\n".encode()}, say, labels=labels, tag=tag)


async def _inspect(docker: aiodocker.Docker, name: str) -> dict[str, Any] | None:
    try:
        return await docker.images.inspect(name)
    except aiodocker.DockerError as e:
        if e.status == 404:
            return None
        raise


async def _base(docker: aiodocker.Docker, suite: str, mirror: str, say: Say) -> str:
    """A minimal Debian ``suite`` imported as ``dispatchbot-base:<suite>``, made once."""
    tag = f"{BASE_REPO}:{suite}"
    if await _inspect(docker, tag) is not None:
        return tag
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is missing: apt-get install debootstrap (scripts/setup does)")
    with tempfile.TemporaryDirectory(prefix="dispatchbot-rootfs-", dir="/var/tmp") as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(f"debootstrap {suite} from {mirror}")
        await _run(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror], say, "base")
        # No package lists or downloaded .debs in the image: the Dockerfile runs apt-get update first.
        for junk in [*rootfs.glob("var/cache/apt/archives/*.deb"), *rootfs.glob("var/lib/apt/lists/*")]:
            if junk.is_file():
                junk.unlink()
        (rootfs / "etc/apt/sources.list").write_text(apt_sources(suite, mirror))
        say(f"importing {tag}")
        await _import(docker, rootfs, tag)
    return tag


async def _run(argv: list[str], say: Say, prefix: str) -> None:
    """Runs ``argv``, showing its output; a failure quotes the last lines."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert proc.stdout is not None
    tail: list[str] = []
    async for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip()
        tail = [*tail[-19:], line]
        say(f"{prefix}: {line}")
    if await proc.wait() != 0:
        raise ImageBuildError(f"{argv[0]} exited with {proc.returncode}: " + " / ".join(tail[-3:]))


async def _import(docker: aiodocker.Docker, rootfs: Path, tag: str) -> None:
    """``docker import``: the root file system, streamed as a tar straight from ``tar``."""
    proc = await asyncio.create_subprocess_exec(
        "tar", "-C", str(rootfs), "--numeric-owner", "-c", ".", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None

    async def chunks(stream: asyncio.StreamReader) -> AsyncIterator[bytes]:
        while chunk := await stream.read(1 << 20):
            yield chunk

    repo, name = tag.split(":")
    # aiodocker has no call for the engine's import; this is its endpoint, POST /images/create?fromSrc=-.
    async with docker._query_chunked_post(
        "images/create",
        params={"fromSrc": "-", "repo": repo, "tag": name},
        data=chunks(proc.stdout),
        headers={"Content-Type": "application/x-tar"},
        timeout=None,
    ) as response:
        for line in (await response.text()).splitlines():
            if line.strip() and "error" in (msg := json.loads(line)):
                raise ImageBuildError(f"docker import: {msg['error']}")
    if await proc.wait() != 0:  # the engine may have imported what it got: no half a base under the tag
        await docker.images.delete(tag, force=True)
        raise ImageBuildError(f"tar of {rootfs} exited with {proc.returncode}")


def _context(entries: dict[str, bytes]) -> io.BytesIO:
    """A build context (gzipped tar) holding ``entries``; CodeRabbit's binary is executable."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name == CODERABBIT else 0o644
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


async def _build(
    docker: aiodocker.Docker,
    context: dict[str, bytes],
    say: Say,
    *,
    buildargs: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    tag: str | None = None,
) -> str:
    """Runs one ``docker build``, showing its output; returns the image id."""
    image_id = None
    stream = docker.images.build(
        fileobj=_context(context), encoding="gzip", buildargs=buildargs, labels=labels, tag=tag, rm=True,
        forcerm=True, stream=True,
    )
    try:
        async for msg in stream:
            for line in msg.get("stream", "").splitlines():
                if line.strip():
                    say(f"build: {line.rstrip()}")
            image_id = msg.get("aux", {}).get("ID", image_id)
    except aiodocker.DockerError as e:  # aiodocker raises the stream's own error message
        raise ImageBuildError(f"docker build: {e.message.strip()}") from e
    if image_id is None:
        raise ImageBuildError("docker build ended without an image")
    return image_id


async def _versions(docker: aiodocker.Docker, image: str, clis: list[str]) -> dict[str, str]:
    """Each CLI's ``--version`` inside ``image``, as the agent user without network."""
    script = 'for c in "$@"; do echo "== $c"; "$c" --version </dev/null 2>&1; done'
    container = await docker.containers.run(
        {
            "Image": image,
            "Entrypoint": [],
            "Cmd": ["sh", "-c", script, "sh", *clis],
            "HostConfig": {"NetworkMode": "none"},
        }
    )
    try:
        async with asyncio.timeout(120.0):
            await container.wait()
        output = "".join(await container.log(stdout=True, stderr=True))
    finally:
        await container.delete(force=True)
    found: dict[str, str] = {}
    for section in output.split("== ")[1:]:
        name, _, text = section.partition("\n")
        match = _VERSION.search(text)
        if not match:
            raise ImageBuildError(f"{name} --version answered no version: {text.strip()[-300:]!r}")
        found[name.strip()] = match[0]
    return found
