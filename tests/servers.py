"""Private server instances on free ports, for tests that stop or restart a server."""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator

from demo.cluster import free_port

from .services import wait_port

__all__ = ["free_port"]


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
            self.proc.kill()  # SIGKILL ends a frozen (SIGSTOPped) server too
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, the server never answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)


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


class TcpProxy:
    """A TCP proxy on a free port (``.port``) to a real server, that can be cut.

    ``cut()`` resets every open connection and refuses new ones (the client sees
    what it sees when the server goes away); ``restore()`` lets connections through
    again. For failures of a shared server (PostgreSQL) that a test must not stop.
    ``dropping = True`` keeps the connections open but throws away what they carry
    (a link that lags: a replica that stops receiving its primary's writes).
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        import threading

        self.target = (host, target_port)
        self.down = False
        self.dropping = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="tcp-proxy").start()

    def _accept(self) -> None:
        import threading

        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            upstream.settimeout(None)
            with self._lock:  # cut() takes the lock: no pair slips past it
                if self.down:
                    _reset(client)
                    _reset(upstream)
                    continue
                self._pairs.append((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b, self), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self.down = True
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            _reset(client)
            _reset(upstream)

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


def _reset(sock: socket.socket) -> None:
    import struct

    # SO_LINGER 0: the close sends RST, as a crashed peer does. shutdown() first:
    # a close alone neither wakes the pump thread blocked in recv() on it nor
    # releases the socket (and so sends nothing) until that recv returns.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


def _pump(src: socket.socket, dst: socket.socket, proxy: TcpProxy) -> None:
    try:
        while data := src.recv(65536):
            if not proxy.dropping:
                dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
