"""Running agent containers; ``docker`` is the only backend for now."""

from bot.executor.docker import (
    ContainerInfo,
    ContainerSpec,
    DockerExecutor,
    ExecutorError,
    Exit,
    ImageInfo,
    Mount,
    parse_bytes,
)

__all__ = [
    "ContainerInfo", "ContainerSpec", "DockerExecutor", "ExecutorError", "Exit", "ImageInfo", "Mount", "parse_bytes",
]
