"""Build ``dispatchbot-test-agent:latest``, a tiny image running the scripted agent, without a registry.

No image can be pulled where the tests run, so the root filesystem is assembled here as a tar stream
(busybox-static and its applets, the host's git with the libraries ``ldd`` lists, a user 1000 ``agent``,
and ``scripted-agent`` under the upstream CLI names) and fed to ``docker import``. The image carries a
hash of every input as a label; when the tagged image already has that hash, nothing is rebuilt. Like the
bot's agent images it also lists its CLIs in the ``dispatchbot.clis`` label.

Run ``python tests/agentimage/build.py`` to build by hand.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path

TAG = "dispatchbot-test-agent:latest"
HASH_LABEL = "dispatchbot.test-agent.hash"
AGENT_NAMES = ("codex", "claude", "gemini", "coderabbit")
# The label the bot's agent images carry ({cli: version}), so preflight finds the CLIs without a probe.
CLIS_LABEL = "dispatchbot.clis"
VERSION = "scripted"

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "scripted-agent"
BUSYBOX = Path("/bin/busybox")
GIT = Path("/usr/bin/git")

PASSWD = "root:x:0:0:root:/root:/bin/sh\nagent:x:1000:1000:agent:/home/agent:/bin/sh\n"
GROUP = "root:x:0:\nagent:x:1000:\n"
# The clone is bind-mounted and usually owned by another uid than the agent's.
GITCONFIG = "[safe]\n\tdirectory = *\n[init]\n\tdefaultBranch = main\n"


def shared_libraries(binary: Path) -> list[Path]:
    """The paths the dynamic loader opens for ``binary``, the loader itself included."""
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    return [Path(m) for m in re.findall(r"(/\S+) \(0x", out)]


def host_files() -> dict[str, Path]:
    """Image path -> host file whose content goes there (symlinks in the host are resolved)."""
    files = {str(BUSYBOX): BUSYBOX, str(GIT): GIT}
    files.update({str(lib): lib for lib in shared_libraries(GIT)})
    files["/usr/local/bin/scripted-agent"] = SCRIPT
    return files


def content_hash(files: dict[str, Path]) -> str:
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for target, source in sorted(files.items()):
        digest.update(target.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()


def current_hash(tag: str) -> str | None:
    fmt = "{{index .Config.Labels \"%s\"}}" % HASH_LABEL
    res = subprocess.run(["docker", "image", "inspect", "--format", fmt, tag], capture_output=True, text=True)
    return res.stdout.strip() if res.returncode == 0 else None


def rootfs_tar(files: dict[str, Path]) -> bytes:
    """A tar of the whole root filesystem, owned by root except the agent's home."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(path: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
                link: str = "", uid: int = 0) -> None:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, link, uid, uid
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("/bin", "/etc", "/home", "/lib", "/lib64", "/lib/x86_64-linux-gnu", "/proc", "/sys",
                  "/dev", "/usr", "/usr/bin", "/usr/local", "/usr/local/bin", "/usr/share",
                  "/usr/share/git-core", "/usr/share/git-core/templates"):
            add(d, kind=tarfile.DIRTYPE, mode=0o755)
        add("/root", kind=tarfile.DIRTYPE, mode=0o700)
        add("/tmp", kind=tarfile.DIRTYPE, mode=0o1777)
        add("/home/agent", kind=tarfile.DIRTYPE, mode=0o755, uid=1000)
        for target, source in sorted(files.items()):
            add(target, data=source.read_bytes(), mode=0o755)
        applets = subprocess.run([str(BUSYBOX), "--list"], check=True, capture_output=True, text=True)
        for applet in applets.stdout.split():
            if applet != "busybox" and "/" not in applet:
                add(f"/bin/{applet}", kind=tarfile.SYMTYPE, link="busybox")
        for name in AGENT_NAMES:
            add(f"/usr/local/bin/{name}", kind=tarfile.SYMTYPE, link="scripted-agent")
        add("/etc/passwd", data=PASSWD.encode())
        add("/etc/group", data=GROUP.encode())
        add("/etc/gitconfig", data=GITCONFIG.encode())
    return buf.getvalue()


def build(tag: str = TAG) -> str:
    """Build the image unless an identical one is already tagged; return the tag."""
    files = host_files()
    digest = content_hash(files)
    if current_hash(tag) == digest:
        return tag
    changes = [
        "ENV PATH=/usr/local/bin:/usr/bin:/bin",
        "USER 1000:1000",
        "WORKDIR /home/agent",
        f"LABEL {HASH_LABEL}={digest}",
        f"LABEL {CLIS_LABEL}={json.dumps(json.dumps(dict.fromkeys(AGENT_NAMES, VERSION)))}",
    ]
    cmd = ["docker", "import", *(arg for c in changes for arg in ("--change", c)), "-", tag]
    res = subprocess.run(cmd, input=rootfs_tar(files), capture_output=True)
    if res.returncode != 0:
        raise RuntimeError(f"docker import failed: {res.stderr.decode(errors='replace').strip()}")
    return tag


if __name__ == "__main__":
    print(build(*sys.argv[1:]))
