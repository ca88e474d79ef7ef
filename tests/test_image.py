"""The agent image: its Dockerfile is the manifest's, and the image built from it holds what agents need."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import aiodocker
import pytest

from bot.image.build import (
    CLIS_LABEL,
    RECIPE_LABEL,
    REPO,
    Image,
    ImageBuildError,
    Recipe,
    apt_mirror,
    apt_sources,
    build,
)
from bot.image.recipe import Manifest, dockerfile
from tests.docker_fixtures import real_image_recipe

# Without scripts/setup before, the first test using real_agent_image builds it.
pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parent.parent
MANIFEST = Manifest.load()


def test_committed_dockerfile_is_the_generated_one():
    assert (ROOT / "Dockerfile").read_text() == dockerfile(MANIFEST), "run: dispatchbot image dockerfile > Dockerfile"


def test_the_image_command_prints_the_dockerfile_and_names_a_missing_file(tmp_path):
    cli = [sys.executable, "-m", "bot.cli", "image"]
    env = {**os.environ, "DISPATCHBOT_CONFIG": str(tmp_path / "none.toml")}
    printed = subprocess.run([*cli, "dockerfile"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert printed.returncode == 0 and printed.stdout == dockerfile(MANIFEST)
    missing = subprocess.run([*cli, "build", "--ca-cert", str(tmp_path / "nope.crt")], capture_output=True,
                             text=True, env=env, cwd=ROOT)
    assert missing.returncode == 2 and "nope.crt" in missing.stderr and missing.stdout == ""


def test_the_manifest_pins_exact_versions():
    versions = [MANIFEST.node.version, MANIFEST.node.npm, *MANIFEST.pinned().values()]
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in versions), versions
    assert set(MANIFEST.pinned()) == {"codex", "claude", "gemini", "opencode"}
    assert MANIFEST.node.version.startswith("22.")


def test_the_recipe_hash_names_every_input(tmp_path):
    text = Recipe.load().manifest_text
    ca = tmp_path / "proxy.crt"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    plain = Recipe(text)
    variants = [
        Recipe(text.replace('version = "0.61.0"', 'version = "0.61.1"')),
        Recipe(text, ca_certs=(ca.read_bytes(),)),
        Recipe(text, coderabbit=b"\x7fELF..."),
    ]
    assert Recipe(text).hash == plain.hash
    assert len({plain.hash, *(v.hash for v in variants)}) == 4
    assert Recipe.load([ca]).hash == variants[1].hash
    assert "coderabbit" in variants[2].clis and "coderabbit" not in plain.clis


def test_a_manifest_with_unknown_keys_is_refused():
    with pytest.raises(ValueError, match="extra"):
        Manifest.load(Recipe.load().manifest_text + "\n[surprise]\nx = 1\n")


def test_the_debian_mirror_is_the_one_apt_uses(tmp_path):
    (tmp_path / "etc/apt/sources.list.d").mkdir(parents=True)
    assert apt_mirror("bookworm", tmp_path) is None
    (tmp_path / "etc/apt/sources.list").write_text("deb [arch=amd64] http://mirror.local/debian bookworm main\n")
    assert apt_mirror("bookworm", tmp_path) == "http://mirror.local/debian"
    (tmp_path / "etc/apt/sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb822.local/debian\nSuites: bookworm bookworm-updates\nComponents: main\n\n"
        "Types: deb\nURIs: http://deb822.local/security\nSuites: bookworm-security\nComponents: main\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://deb822.local/debian"
    assert apt_mirror("bookworm-security", tmp_path) == "http://deb822.local/security"
    assert apt_sources("bookworm", "http://m/debian").startswith(
        "deb http://m/debian bookworm main\ndeb http://m/debian bookworm-updates main\n"
    )


def _run(image: str, script: str, *docker_args: str) -> str:
    res = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--user", "1000:1000", *docker_args, image, "sh", "-c", script],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.docker
def test_the_image_runs_agents_as_uid_1000_with_node_22_and_git(real_agent_image: Image, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    if os.getuid() == 0:
        os.chown(repo, 1000, 1000)
    else:
        repo.chmod(0o777)
    out = _run(
        real_agent_image.tag,
        'id -un; id -u; echo "$HOME"; pwd; node --version; git --version; cat ~/.gemini/settings.json; '
        "ls -nd ~/.codex ~/.claude ~/.gemini | awk '{print $3\":\"$4}'; echo $IS_SANDBOX $SANDBOX $GEMINI_CLI_TRUST_WORKSPACE; "
        "git init -q && echo hi > made-here && git add made-here && git status --short",
        "-v", f"{repo}:/workspace/repo",
    ).splitlines()
    assert out[:4] == ["agent", "1000", "/home/agent", "/workspace/repo"]
    assert out[4].startswith("v22.")
    assert out[5].startswith("git version")
    assert json.loads(out[6]) == {"security": {"auth": {"selectedType": "gemini-api-key"}}}
    assert out[7:10] == ["1000:1000"] * 3
    assert out[10] == "1 dispatchbot true"
    assert out[11] == "A  made-here"
    assert (repo / "made-here").read_text() == "hi\n"


@pytest.mark.docker
def test_each_cli_answers_with_its_pinned_version_and_the_labels_say_so(real_agent_image: Image):
    script = 'for c in codex claude gemini opencode; do echo "$c $($c --version </dev/null 2>&1 | head -1)"; done'
    answers = dict(line.split(" ", 1) for line in _run(real_agent_image.tag, script).splitlines())
    for cli, version in MANIFEST.pinned().items():
        assert re.search(rf"\b{re.escape(version)}\b", answers[cli]), (cli, answers[cli])
    labels = json.loads(subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", real_agent_image.tag],
        check=True, capture_output=True, text=True,
    ).stdout)
    assert labels[RECIPE_LABEL] == real_image_recipe().hash
    assert json.loads(labels[CLIS_LABEL]) == MANIFEST.pinned()
    assert real_agent_image.tag == f"{REPO}:{real_image_recipe().hash}"


@pytest.mark.docker
async def test_an_existing_recipe_is_not_built_again(real_agent_image: Image):
    lines: list[str] = []
    started = time.monotonic()
    async with aiodocker.Docker() as docker:
        again = await build(docker, real_image_recipe(), lines.append, latest=False)
    assert time.monotonic() - started < 5
    assert again.cached and again.id == real_agent_image.id
    assert lines == [f"{real_agent_image.tag} exists: nothing to build"]


@pytest.mark.docker
async def test_coderabbit_from_a_local_file_is_added_and_labelled(real_agent_image: Image, tmp_path):
    """Docker's layer cache makes this a few seconds: only the added file and the labels are new."""
    cli = tmp_path / "coderabbit"
    cli.write_text("#!/bin/sh\necho 0.3.9\n")
    recipe = Recipe.load(sorted(Path("/usr/local/share/ca-certificates").glob("*.crt")), cli)
    async with aiodocker.Docker() as docker:
        try:
            image = await build(docker, recipe, lambda line: None, latest=False)
            assert image.clis == {**MANIFEST.pinned(), "coderabbit": "0.3.9"}
            assert not image.cached and image.id != real_agent_image.id
            latest = await docker.images.inspect(f"{REPO}:latest")
            assert latest["Id"] != image.id, "asked not to, the build moved latest"
        finally:
            await docker.images.delete(f"{REPO}:{recipe.hash}", force=True)


@pytest.mark.docker
async def test_a_node_tarball_that_does_not_match_its_pinned_hash_fails_the_build(real_agent_image: Image):
    pinned = real_image_recipe()
    tampered = Recipe(pinned.manifest_text.replace(MANIFEST.node.sha512, "0" * 128), ca_certs=pinned.ca_certs)
    lines: list[str] = []
    async with aiodocker.Docker() as docker:
        with pytest.raises(ImageBuildError, match="returned a non-zero code"):
            await build(docker, tampered, lines.append, latest=False)
        with pytest.raises(aiodocker.DockerError):
            await docker.images.inspect(f"{REPO}:{tampered.hash}")
    assert any("node.tgz: FAILED" in line for line in lines), lines[-5:]


def test_the_build_trusts_the_hosts_extra_ca_certificates_unless_told_otherwise(tmp_path):
    """Behind a proxy that re-signs TLS the build fails with curl's error 60 without them."""
    from bot.image.command import HOST_CA_CERTS, ca_certs

    host = sorted(HOST_CA_CERTS.glob("*.crt"))
    mine = [tmp_path / "mine.crt"]
    assert ca_certs([], use_host=True) == host
    assert ca_certs(mine, use_host=True) == mine
    assert ca_certs([], use_host=False) == []
