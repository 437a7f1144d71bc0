"""Find or start the servers the suite needs; fail with a clear message otherwise.

Shared services run on their standard loopback ports. When one is down the suite
starts it with the command below (installing the Debian package first when the
binary is missing). Tests that stop or restart a server use :mod:`tests.servers`
to run their own instance on a free port instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Service:
    name: str
    host: str
    port: int
    binary: str
    package: str
    start: str
    hint: str


def _pg_start() -> str:
    versions = (
        sorted(os.listdir("/etc/postgresql"))
        if os.path.isdir("/etc/postgresql")
        else []
    )
    version = versions[-1] if versions else "15"
    return f"pg_ctlcluster --skip-systemctl-redirect {version} main start"


SERVICES: dict[str, Service] = {
    "redis": Service(
        "redis",
        "127.0.0.1",
        6379,
        "redis-server",
        "redis-server",
        'redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
        "--appendonly no",
        "Start Redis on 127.0.0.1:6379.",
    ),
    "nats": Service(
        "nats",
        "127.0.0.1",
        4222,
        "nats-server",
        "nats-server",
        "start-stop-daemon --start --oknodo --background --exec "
        "$(command -v nats-server) -- -a 127.0.0.1 -p 4222 -js -sd /tmp/mc-nats-js",
        "Start NATS with JetStream on 127.0.0.1:4222 (nats-server -js).",
    ),
    "postgres": Service(
        "postgres",
        "127.0.0.1",
        5432,
        "pg_ctlcluster",
        "postgresql",
        "",
        "Start PostgreSQL on 127.0.0.1:5432 with trust auth and a 'test' database.",
    ),
    "rabbitmq": Service(
        "rabbitmq",
        "127.0.0.1",
        5672,
        "rabbitmq-server",
        "rabbitmq-server",
        "rabbitmq-server -detached",
        "Start RabbitMQ on 127.0.0.1:5672 (guest/guest).",
    ),
}

#: pytest marker -> services it needs.
MARKER_SERVICES = {
    "redis": ("redis",),
    "nats": ("nats",),
    "postgres": ("postgres",),
    "celery": ("redis",),
    "rabbitmq": ("rabbitmq",),
}


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.1)
    return False


def _run(cmd: str, timeout: float) -> str:
    proc = subprocess.run(
        cmd, shell=True, capture_output=True, text=True, timeout=timeout, check=False
    )
    return (proc.stdout + proc.stderr).strip()


def ensure(name: str, *, timeout: float = 60.0) -> None:
    """Return when ``name`` answers; start (and install) it if needed, else raise."""
    svc = SERVICES[name]
    if port_open(svc.host, svc.port):
        return
    log = []
    try:
        if shutil.which(svc.binary) is None and not glob.glob(
            f"/usr/*bin/{svc.binary}"
        ):
            log.append(_run("apt-get update -qq", 300))
            log.append(_run(f"apt-get install -y -qq {svc.package}", 600))
        start = _pg_start() if name == "postgres" else svc.start
        log.append(_run(start, 120))
    except (OSError, subprocess.SubprocessError) as exc:
        log.append(str(exc))
    if not wait_port(svc.host, svc.port, timeout):
        raise RuntimeError(
            f"{svc.name} is not reachable on {svc.host}:{svc.port} and could not be "
            f"started. {svc.hint} Tried: {start!r}. Output: {' | '.join(filter(None, log))[:800]}"
        )
