"""The Docker executor against the real engine, with the scripted agent image."""

from __future__ import annotations

import asyncio
import json
import shlex
import subprocess
import time

import pytest

from bot.executor.docker import DockerExecutor, ExecutorError, Exit, container_config, parse_bytes
from bot.runs.containers import RUN_LABEL
from bot.settings import Limits

from .helpers import git, wait_for

pytestmark = pytest.mark.docker

TRICKY = "it's \"quoted\" $(touch /tmp/pwned) `id` ; echo $HOME *\n  second line\twith tab\n"


async def run(executor: DockerExecutor, spec, *, timeout: float = 30, grace: float = 2) -> tuple[str, Exit]:
    cid = await executor.start(spec)
    return cid, await executor.wait(cid, time.time() + timeout, grace)


def inspect(cid: str) -> dict:
    """What Docker itself says, through the CLI rather than the code under test."""
    return json.loads(subprocess.run(["docker", "inspect", cid], check=True, capture_output=True).stdout)[0]


def argv_line(log: bytes) -> list[str]:
    """The argv the scripted agent reported on stderr (shell-quoted by the agent itself)."""
    text = log.decode()
    start = text.index("argv: ") + len("argv: ")
    return shlex.split(text[start : text.index("\nscenario: ")])


def test_parse_bytes() -> None:
    assert parse_bytes("4g") == 4 << 30
    assert parse_bytes("512m") == 512 << 20
    assert parse_bytes("1.5GiB") == 3 << 29
    assert parse_bytes("1024") == 1024
    with pytest.raises(ExecutorError):
        parse_bytes("lots")


def test_config_carries_no_secret_outside_env(make_spec) -> None:
    spec = make_spec(["codex", "exec", "prompt"], env={"OPENAI_API_KEY": "sk-secret-value"})
    config = container_config(spec)
    config.pop("Env")
    assert "sk-secret-value" not in repr(config)


async def test_argv_passes_through_exactly(executor, make_spec) -> None:
    argv = ["codex", "exec", "--model", "o3", f"scenario:no-change\n{TRICKY}", TRICKY, "", "-"]
    cid, exit = await run(executor, make_spec(argv))
    assert exit == Exit(code=0)
    log = await executor.logs(cid, stdout=False, limit=100_000)
    assert argv_line(log) == ["/usr/local/bin/codex", *argv[1:]]
    info = inspect(cid)
    assert info["Config"]["Cmd"] == argv
    assert not info["Config"]["Entrypoint"]
    await executor.remove(cid)


async def test_env_reaches_the_process_but_not_cmd_or_labels(executor, make_spec) -> None:
    secret = "sk-test-0123456789"
    env = {"HOME": "/tmp", "ANTHROPIC_API_KEY": secret}
    spec = make_spec(["claude", "-p", "scenario:secret-echo"], env=env)
    cid, exit = await run(executor, spec)
    assert exit.code == 0
    assert f"ANTHROPIC_API_KEY={secret}".encode() in await executor.logs(cid, stderr=False, limit=10_000)
    info = inspect(cid)
    assert secret not in repr([info["Path"], info["Args"], info["Config"]["Cmd"], info["Config"]["Labels"]])
    await executor.remove(cid)


async def test_limits_are_applied(executor, make_spec) -> None:
    limits = Limits(memory="200m", cpus=0.5, pids=64, cap_add=["CHOWN"], user="1000:1000")
    probe = "id -u; grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status; cat /proc/1/comm"
    cid, exit = await run(executor, make_spec(["sh", "-c", probe], limits=limits))
    assert exit.code == 0
    out = (await executor.logs(cid, limit=10_000)).decode().split("\n")
    assert out[0] == "1000"
    assert "NoNewPrivs:\t1" in out
    assert "CapEff:\t0000000000000000" in out  # non-root: no effective capabilities
    assert "CapBnd:\t0000000000000001" in out  # nothing but CAP_CHOWN could ever be gained
    assert out[4] == "docker-init"
    info = inspect(cid)
    host = info["HostConfig"]
    assert host["Init"] is True
    assert host["CapDrop"] == ["ALL"] and host["CapAdd"] == ["CHOWN"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == host["MemorySwap"] == 200 << 20
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 64
    assert host["AutoRemove"] is False
    assert host["ExtraHosts"] == ["host.docker.internal:host-gateway"]
    assert info["Config"]["User"] == "1000:1000"
    assert info["Config"]["Tty"] is False
    assert info["Config"]["WorkingDir"] == "/work/repo"
    await executor.remove(cid)


async def test_edit_commit_in_the_mounted_clone(executor, make_spec, workspace) -> None:
    cid, exit = await run(executor, make_spec(["gemini", "--prompt", "fix it\nscenario:edit-commit"]))
    assert exit == Exit(code=0)
    assert git(workspace, "log", "-1", "--format=%s %an") == "docs: record agent notes gemini"
    assert git(workspace, "status", "--porcelain") == ""
    assert b"Done: record agent notes" in await executor.logs(cid, limit=10_000)
    await executor.remove(cid)


async def test_commit_identity_from_env_wins(executor, make_spec, workspace) -> None:
    ident = {"NAME": "dispatchbot", "EMAIL": "bot@localhost"}
    env = {"HOME": "/tmp"} | {f"GIT_{who}_{k}": v for who in ("AUTHOR", "COMMITTER") for k, v in ident.items()}
    cid, exit = await run(executor, make_spec(["codex", "scenario:edit-commit"], env=env))
    assert exit.code == 0
    assert git(workspace, "log", "-1", "--format=%an <%ae>") == "dispatchbot <bot@localhost>"
    await executor.remove(cid)


@pytest.mark.parametrize(
    "scenario, status",
    [
        ("edit-uncommitted", "?? AGENT_NOTES.md\n?? UNCOMMITTED.md"),
        ("no-change", ""),
        ("blocked", "?? BLOCKED.md"),
        ("answer", "?? BLOCKED.md"),
    ],
)
async def test_scenarios_leave_the_clone_as_described(
    executor, make_spec, workspace, scenario: str, status: str
) -> None:
    head = git(workspace, "rev-parse", "HEAD")
    cid, exit = await run(executor, make_spec(["scripted-agent", f"scenario:{scenario}"]))
    assert exit.code == 0
    assert git(workspace, "rev-parse", "HEAD") == head
    assert git(workspace, "status", "--porcelain") == status
    await executor.remove(cid)


async def test_answer_resumes_with_a_commit(executor, make_spec, workspace) -> None:
    (workspace / "ANSWER.md").write_text("use src.py\n")
    cid, exit = await run(executor, make_spec(["codex", "scenario:answer"]))
    assert exit.code == 0
    assert "apply the answer: use src.py" in git(workspace, "log", "-1", "--format=%s")
    await executor.remove(cid)


async def test_review_points_at_real_lines_of_the_last_commit(executor, make_spec) -> None:
    cid, exit = await run(executor, make_spec(["coderabbit", "review", "--plain", "scenario:review"]))
    assert exit.code == 0
    out = (await executor.logs(cid, stderr=False, limit=10_000)).decode()
    assert "src.py:1: consider a clearer wording here" in out
    assert "src.py:4: consider a clearer wording here" in out  # line 2-3 are blank
    assert "README.md" not in out and "Overall" in out
    await executor.remove(cid)


async def test_failure_exit_code(executor, make_spec) -> None:
    cid, exit = await run(executor, make_spec(["codex", "scenario:fail"]))
    assert exit == Exit(code=3, error="exited with code 3")
    assert b"error: scripted failure" in await executor.logs(cid, stdout=False, limit=10_000)
    await executor.remove(cid)


async def test_timeout_stops_with_sigterm(executor, make_spec) -> None:
    cid = await executor.start(make_spec(["codex", "scenario:hang"]))
    began = time.time()
    exit = await executor.wait(cid, began + 1, grace=10)
    assert time.time() - began < 4  # SIGTERM was enough; the grace was not used up
    assert exit.timed_out and exit.killed and exit.code == 128 + 15
    await executor.remove(cid)


async def test_timeout_escalates_to_sigkill(executor, make_spec) -> None:
    cid = await executor.start(make_spec(["codex", "scenario:hang-ignore-term"]))
    began = time.time()
    exit = await executor.wait(cid, began + 1, grace=1.5)
    assert 2.5 <= time.time() - began < 2.5 + 3
    assert exit.timed_out and exit.killed and exit.code == 128 + 9
    await executor.remove(cid)


async def test_oom_is_reported(executor, make_spec) -> None:
    spec = make_spec(["codex", "scenario:oom"], limits=Limits(memory="32m", user="1000:1000"))
    cid, exit = await run(executor, spec)
    assert exit.oom_killed and exit.code != 0 and "out of memory" in exit.error
    await executor.remove(cid)


async def test_wait_on_an_already_exited_container(executor, make_spec) -> None:
    cid = await executor.start(make_spec(["codex", "scenario:no-change"]))

    async def exited() -> bool:
        return not (await executor.inspect_state(cid))["Running"]

    await wait_for(exited)
    began = time.time()
    # The deadline is long gone, but the container finished: not a timeout.
    assert await executor.wait(cid, began - 100, grace=5) == Exit(code=0)
    assert time.time() - began < 1
    await executor.remove(cid)


async def test_readopted_container_completes_under_a_new_executor(
    executor, make_spec, docker_label, workspace
) -> None:
    cid = await executor.start(make_spec(["claude", "scenario:slow-ok:1"]))
    adopter = DockerExecutor()
    try:
        [found] = await adopter.list(label=docker_label)
        assert found.id == cid and found.running
        assert await adopter.wait(found.id, time.time() + 30, grace=2) == Exit(code=0)
    finally:
        await adopter.close()
    assert git(workspace, "log", "-1", "--format=%s").startswith("docs: record agent notes after a slow start")
    await executor.remove(cid)


async def test_readopted_container_keeps_its_original_deadline(executor, make_spec) -> None:
    cid = await executor.start(make_spec(["claude", "scenario:hang"]))
    adopter = DockerExecutor()
    try:
        exit = await adopter.wait(cid, deadline=time.time() - 1, grace=5)
    finally:
        await adopter.close()
    assert exit.timed_out and exit.code == 128 + 15
    await executor.remove(cid)


async def test_kill_is_idempotent(executor, make_spec) -> None:
    cid = await executor.start(make_spec(["codex", "scenario:hang"]))
    await executor.kill(cid, grace=5)
    assert (await executor.inspect_state(cid))["Running"] is False
    await executor.kill(cid, grace=5)
    assert await executor.wait(cid, time.time() + 5, grace=1) == Exit(
        code=143, killed=True, error="killed by signal 15"
    )
    await executor.remove(cid)
    await executor.remove(cid)
    await executor.kill(cid, grace=1)
    assert await executor.inspect_state(cid) is None
    assert await executor.wait(cid, time.time() + 5, grace=1) == Exit(code=None, error="the container vanished")


async def test_missing_image_raises_and_leaves_nothing(executor, make_spec, docker_label) -> None:
    with pytest.raises(ExecutorError, match="dispatchbot-no-such-image:1' is not present"):
        await executor.start(make_spec(["codex"], image="dispatchbot-no-such-image:1"))
    assert await executor.list(label=docker_label) == []


async def test_start_failure_removes_the_created_container(executor, make_spec, docker_label) -> None:
    # An unknown user name only fails when the runtime starts the process, i.e. after create.
    with pytest.raises(ExecutorError, match="cannot start container"):
        await executor.start(make_spec(["codex"], limits=Limits(user="nosuchuser")))
    assert await executor.list(label=docker_label) == []


async def test_each_of_two_concurrent_removes_returns_only_once_the_container_is_gone(executor, make_spec) -> None:
    """The second one meets Docker's "removal already in progress" (409) and waits for its end."""
    for _ in range(3):
        cid = await executor.start(make_spec(["codex", "scenario:hang-ignore-term"]))

        async def remove_and_look(container: str) -> dict | None:
            await executor.remove(container)
            return await executor.inspect_state(container)

        assert await asyncio.gather(remove_and_look(cid), remove_and_look(cid)) == [None, None]


async def test_name_conflict_keeps_the_existing_container(executor, make_spec, docker_label) -> None:
    first = make_spec(["codex", "scenario:hang"])
    cid = await executor.start(first)
    with pytest.raises(ExecutorError, match="already exists"):
        await executor.start(make_spec(["codex"], name=first.name))
    assert [c.id for c in await executor.list(label=docker_label)] == [cid]
    await executor.remove(cid)


async def test_logs_keep_the_tail_and_select_streams(executor, make_spec) -> None:
    script = "echo err >&2; head -c 100000 /dev/zero | tr '\\0' a; echo; echo END"
    cid, exit = await run(executor, make_spec(["sh", "-c", script]))
    assert exit.code == 0
    tail = await executor.logs(cid, limit=1000)
    assert len(tail) == 1000 and tail.endswith(b"a\nEND\n")
    assert await executor.logs(cid, stdout=False, limit=1000) == b"err\n"
    assert len(await executor.logs(cid, limit=10**6)) == 100_000 + len(b"err\n\nEND\n")
    await executor.remove(cid)


async def test_list_by_label(executor, make_spec, docker_label) -> None:
    running = await executor.start(make_spec(["codex", "scenario:hang"]))
    done, _ = await run(executor, make_spec(["codex", "scenario:no-change"]))
    infos = {c.id: c for c in await executor.list(label=docker_label)}
    assert set(infos) == {running, done}
    assert infos[running].running and not infos[done].running
    assert infos[running].labels["dispatchbot.run"].endswith("-0")
    assert infos[running].name.endswith("-0")
    assert abs(infos[done].created - time.time()) < 60
    assert running in {c.id for c in await executor.list(RUN_LABEL)}
    for cid in infos:
        await executor.remove(cid)
