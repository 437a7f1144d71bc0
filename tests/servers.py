"""Private server instances on free ports, for tests that stop or restart a server."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

from .services import wait_port


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server child process that can be stopped and started again on its port."""

    def __init__(self, argv: list[str], port: int) -> None:
        self.argv = argv
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if not wait_port("127.0.0.1", self.port, timeout):
            self.stop()
            raise RuntimeError(f"{self.argv[0]} did not listen on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server() -> Iterator[ServerProcess]:
    """A throwaway ``redis-server`` on a free port (``.port``), killed at exit."""
    port = free_port()
    server = ServerProcess(
        [
            shutil.which("redis-server") or "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        port,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def nats_server(jetstream: bool = True) -> Iterator[ServerProcess]:
    """A throwaway ``nats-server`` on a free port (``.port``), killed at exit."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="mc-nats-") as store:
        argv = [
            shutil.which("nats-server") or "nats-server",
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
        ]
        if jetstream:
            argv += ["-js", "-sd", store]
        server = ServerProcess(argv, port)
        server.start()
        try:
            yield server
        finally:
            server.stop()
