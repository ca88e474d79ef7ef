"""The disk a run may fill: its workspace plus its container's own writable layer, watched while it runs.

Docker 20.10 on overlay2 over ext4 cannot cap a container's disk (``--storage-opt size`` needs xfs
with project quotas), and the workspace outlives its container, so it cannot be a tmpfs. A read-only
root with tmpfs mounts would hide what the image keeps under HOME (the CLIs' settings). So while a
container of the run lives, ``Watch`` measures what the workspace and the container's upper layer
hold and kills the container (SIGKILL at once: it runs the agent's code) when:

- together they pass ``limits.disk``, or
- the run grew while a file system it writes to has less free than ``limits.disk_reserve``: the
  store and the webhook keep their room, whatever the runs' limits add up to.

A run stopped so fails with the reason, and its workspace is deleted: what it wrote must not count
against the next run on it, which starts again from the Forge.

Overshoot: what the run writes between two measurements. The next one comes when even a writer of
``WRITE_RATE`` could have reached the limit or the reserve, at most ``MAX_INTERVAL`` and at least
``MIN_INTERVAL`` apart (plus the time one measurement takes), and never sooner than ``WALKS_BETWEEN``
times the last walk took: a run far below its limit costs little to watch, and a large tree on a
nearly full disk is not walked without pause.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
from pathlib import Path

from bot.executor.docker import DockerExecutor, ExecutorError, parse_bytes
from bot.settings import Limits

log = logging.getLogger(__name__)

MIN_INTERVAL = 0.5
MAX_INTERVAL = 10.0
WRITE_RATE = 1 << 30  # bytes/s a fast writer manages on a local disk
WALKS_BETWEEN = 3  # a walk waits at least this many times as long as the last one took


def usage(root: Path) -> int:
    """Bytes allocated under ``root`` (blocks, so a sparse file counts what it uses), each inode once,
    symlinks never followed; 0 when it is gone. Files vanishing meanwhile are skipped."""
    seen: set[tuple[int, int]] = set()
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            total += info.st_blocks * 512
            if stat.S_ISDIR(info.st_mode):
                stack.append(entry.path)
    return total


def free(path: Path) -> int | None:
    """Bytes free for unprivileged writers on ``path``'s file system; None when it cannot be read."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


class Watch:
    """``async with Watch(...) as watch``: measures while the body waits for the container; once it
    is over, ``watch.reason`` says why the watch killed the container, or is ""."""

    def __init__(self, executor: DockerExecutor, limits: Limits, container_id: str, workspace: Path) -> None:
        self.executor, self.container_id, self.workspace = executor, container_id, workspace
        self.limit, self.reserve = parse_bytes(limits.disk), parse_bytes(limits.disk_reserve)
        self.reason = ""
        self.peak = 0  # the most the run was seen to hold, for the overshoot figure
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Watch:
        self._task = asyncio.create_task(self._watch(), name=f"disk-{self.container_id[:12]}")
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None and not self.reason:
            self._task.cancel()
        [outcome] = await asyncio.gather(self._task, return_exceptions=True)  # a kill under way finishes
        if isinstance(outcome, Exception):
            log.error("container %s: its disk watch failed", self.container_id[:12], exc_info=outcome)

    async def _watch(self) -> None:
        try:
            layer = await self.executor.writable_layer(self.container_id)
        except ExecutorError:
            layer = None
        if layer is None:
            log.warning("container %s: its own file system cannot be measured, only its workspace", self.container_id[:12])
        places = [p for p in (self.workspace, layer) if p is not None]
        before = None
        while True:
            began = time.monotonic()
            held = sum(await asyncio.gather(*(asyncio.to_thread(usage, p) for p in places)))
            walked = time.monotonic() - began
            self.peak = max(self.peak, held)
            lefts = [left for left in map(free, places) if left is not None]
            self.reason = self._breach(held, before, lefts)
            if self.reason:
                await self.executor.kill(self.container_id, 0.0)
                return
            before = held
            room = min([self.limit - held] + [left - self.reserve for left in lefts])
            interval = min(max(room / WRITE_RATE, MIN_INTERVAL), MAX_INTERVAL)
            await asyncio.sleep(max(interval, WALKS_BETWEEN * walked))

    def _breach(self, held: int, before: int | None, lefts: list[int]) -> str:
        """Why to kill now, or "": ``lefts`` is what each file system the run writes to has free."""
        if held > self.limit:
            return (f"the run wrote past its disk limit: its workspace and its container's own file system"
                    f" held {_size(held)}, the limit is {_size(self.limit)} (limits.disk)")
        if before is not None and held > before:
            for left in lefts:
                if left < self.reserve:
                    return (f"the disk ran low while the run kept writing: {_size(left)} free, below the"
                            f" {_size(self.reserve)} kept for the bot (limits.disk_reserve)")
        return ""
