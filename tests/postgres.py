"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package (installed by
``scripts/setup --test``), started in a temporary directory on a port of its own, stopped after.

PostgreSQL refuses to run as root, and the tests run as root on CI: the server then runs as the
package's ``postgres`` user, in a directory outside root's private temp directories. Each test
gets a database of its own, so tests never see each other's rows, locks or notifications.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from .harness import free_port

USER = "dispatchbot"  # the role the bot connects as (a superuser of this throwaway server)


def binaries() -> Path:
    """The newest installed server's bin directory."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise RuntimeError("no PostgreSQL server installed: run scripts/setup --test (it installs postgresql)")
    return found[-1].parent


class PostgresServer:
    def __init__(self) -> None:
        self.bin = binaries()
        self.root = Path(tempfile.mkdtemp(prefix="dispatchbot-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.runas = "postgres" if os.geteuid() == 0 else None
        if self.runas:
            entry = pwd.getpwnam(self.runas)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._names = itertools.count(1)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")

    def _run(self, tool: str, *args: str) -> str:
        done = subprocess.run(
            [str(self.bin / tool), *args], user=self.runas, cwd=self.root, capture_output=True, text=True
        )
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """Fast shutdown (every connection is cut), then up again on the same port."""
        self.stop()
        self.start()

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server so far: the postmaster, its live children (backends,
        WAL writer, ...) and those it reaped (from /proc; for the benchmarks)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        ticks = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # ended meanwhile
                continue
            pid, parent = int(entry.name), int(fields[1])
            if pid == postmaster:
                ticks += sum(map(int, fields[11:15]))  # utime, stime, and of reaped children
            elif parent == postmaster:
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its URL."""
        name = f"test{next(self._names)}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, "-d", database,
                         "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
