"""Start and drive nodes of the example project (used by ``python -m demo`` and
the plugin cluster tests): ``runserver``/``runworker`` children and a tiny JSON
client for the example pages."""

from __future__ import annotations

import http.cookiejar
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mega_cluster.testing import wait_until  # noqa: F401 - re-exported

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A free port below the kernel's ephemeral range.

    A port from ``bind(0)`` is an ephemeral one: between this check and the
    server's own bind, any outgoing connection (to Redis, PostgreSQL...) may be
    given it as its local port ("That port is already in use"). Below the range
    only a listening server can take it.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            low = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    top = max(2048, low)
    for _ in range(200):
        port = random.randint(max(1024, top - 12000), top - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class Node:
    """A JSON client of one web node's example pages (CSRF handled)."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.base = f"http://127.0.0.1:{port}"
        self.port = port
        self._csrf = secrets.token_hex(16)  # 32 characters, a valid CSRF secret
        jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(jar)
        )
        self._headers = {
            "Accept": "application/json",
            "Cookie": f"csrftoken={self._csrf}",
            "X-CSRFToken": self._csrf,
        }

    def get(self, path: str, **params: str) -> dict[str, Any]:
        query = urllib.parse.urlencode({"format": "json", **params})
        return self._send(urllib.request.Request(f"{self.base}{path}?{query}"))[1]

    def post(self, path: str, **form: Any) -> tuple[int, dict[str, Any]]:
        data = urllib.parse.urlencode({k: str(v) for k, v in form.items()}).encode()
        return self._send(urllib.request.Request(self.base + path, data=data))

    def _send(self, request: urllib.request.Request) -> tuple[int, dict[str, Any]]:
        for key, value in self._headers.items():
            request.add_header(key, value)
        try:
            with self._opener.open(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = exc.read()
            try:
                return exc.code, json.loads(body)
            except ValueError:
                raise AssertionError(
                    f"{self.name} answered {exc.code} with a non-JSON page: "
                    f"{body[:500]!r}"
                ) from None


class Cluster:
    """Child processes of one small cluster; :meth:`stop` ends every one."""

    def __init__(self, env: Mapping[str, str], log_dir: Path) -> None:
        self.env = {**os.environ, **env}
        self.env["PYTHONPATH"] = str(ROOT) + os.pathsep + self.env.get("PYTHONPATH", "")
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append((name, proc))
        return proc

    def web(self, name: str) -> Node:
        port = free_port()
        self.spawn(name, "runserver", f"127.0.0.1:{port}", "--noreload")
        return Node(name, port)

    def worker(self, name: str = "worker") -> subprocess.Popen[bytes]:
        return self.spawn(name, "runworker", "-v", "2")

    def wait_ready(self, nodes: list[Node], timeout: float = 60.0) -> None:
        """Every web node answers; fails early with the log of a child that died."""
        deadline = time.monotonic() + timeout
        for node in nodes:
            while not port_open("127.0.0.1", node.port):
                self.check_alive()
                if time.monotonic() > deadline:
                    raise AssertionError(f"{node.name} did not listen in {timeout}s")
                time.sleep(0.1)

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{name} exited with {proc.returncode}: {self.log(name)[-3000:]}"
                )

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every child (its whole session), SIGKILL what is left."""
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
