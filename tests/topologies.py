"""Private production topologies on loopback and free ports, for tests.

* :func:`redis_sentinel` — a Redis primary, one replica and three sentinels
  (quorum 2) watching them as service :data:`SERVICE`;
* :func:`redis_cluster` — a Redis Cluster of three primaries (no replicas);
* :func:`pgbouncer` — PgBouncer in transaction pooling mode in front of the
  suite's PostgreSQL (127.0.0.1:5432, trust).

Each waits (bounded) until the topology is usable, kills every process it
started at exit and removes its files. Missing binaries are installed with apt
(``redis-sentinel``, ``pgbouncer``), as :mod:`tests.services` does for servers.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from .servers import ServerProcess, TcpProxy, free_port
from .services import wait_port

#: The service name the sentinels monitor.
SERVICE = "mc-primary"

#: ``SENTINEL DEBUG`` periods (ms; Redis >= 7.0), shorter than the defaults as
#: ``down-after-milliseconds`` is: INFO of each instance every 1 s (not 10 s) and
#: hello messages every 0.5 s (not 2 s). A sentinel converts a restarted or
#: demoted old primary into a replica only after it has reported its new role for
#: 4 hello periods (8 s by default, 2 s here), and discovers the other sentinels
#: through hello messages: the same steps, in less time.
SENTINEL_PERIODS = ("info-period", "1000", "publish-period", "500")


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path:
        return path
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", package]):
        subprocess.run(
            argv,
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
            timeout=300,
        )
    path = shutil.which(name) or (
        f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None
    )
    if not path:
        raise RuntimeError(f"{name} is missing: apt-get install {package}")
    return path


def _redis_argv(port: int, *extra: str) -> list[str]:
    return [
        _binary("redis-server", "redis-server"),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        # a replica's full sync starts at once, not after 5 s of waiting for more
        # replicas to share the transfer (the default of a diskless sync)
        "--repl-diskless-sync-delay",
        "0",
        *extra,
    ]


def _wait(what: str, check, timeout: float = 30.0, interval: float = 0.1):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # servers still starting
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise RuntimeError(f"{what} not ready after {timeout} s (last: {last!r})")


def _cli(port: int, *args: str, timeout: float = 5.0) -> str:
    out = subprocess.run(
        [
            _binary("redis-cli", "redis-tools"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return out.stdout


@dataclass
class Sentinel:
    """A running primary + replica + three sentinels (see :func:`redis_sentinel`)."""

    primary: ServerProcess
    replica: ServerProcess
    sentinels: list[ServerProcess]
    service: str = SERVICE
    #: the replication link (replica -> primary) when started with ``lag_link``
    link: TcpProxy | None = None

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        """The ``sentinel://`` URL of the service (db 0)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"sentinel://{hosts}/{self.service}/0"

    def master_port(self) -> int:
        """The port of the primary the sentinels currently announce."""
        reply = _cli(
            self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", self.service
        ).split()
        return int(reply[1])

    def kill_primary(self) -> ServerProcess:
        """``kill -9`` of the current primary; returns its process (restartable)."""
        port = self.master_port()
        node = self.primary if self.primary.port == port else self.replica
        assert node.proc is not None
        node.proc.kill()
        node.proc.wait(timeout=10)
        node.proc = None
        return node

    def wait_promoted(self, old_port: int, timeout: float = 60.0) -> int:
        """Wait until every sentinel announces a primary other than ``old_port``."""

        def promoted() -> int | None:
            ports = set()
            for s in self.sentinels:
                reply = _cli(
                    s.port, "SENTINEL", "get-master-addr-by-name", self.service
                ).split()
                ports.add(int(reply[1]))
            if len(ports) == 1 and old_port not in ports:
                port = ports.pop()
                role = _cli(port, "ROLE").split()
                return port if role and role[0] == "master" else None
            return None

        return _wait("sentinel failover", promoted, timeout)


@contextlib.contextmanager
def redis_sentinel(
    down_after_ms: int = 1000, lag_link: bool = False
) -> Iterator[Sentinel]:
    """A primary, a replica of it and three sentinels (quorum 2), all on loopback.

    The sentinels declare the primary down after ``down_after_ms`` of silence.
    ``lag_link``: the replica replicates through a :class:`TcpProxy` (``.link``)
    whose ``dropping`` makes it miss writes while its link still looks up.
    Yields once the replica is in sync and every sentinel knows the replica and
    the two other sentinels, so a failover can happen from the first moment.
    """
    sentinel_bin = shutil.which("redis-sentinel") or _binary(
        "redis-sentinel", "redis-sentinel"
    )
    started: list[ServerProcess] = []
    link = None
    with tempfile.TemporaryDirectory(prefix="mc-sentinel-") as tmp:
        try:
            primary = ServerProcess(_redis_argv(p := free_port(), "--dir", tmp), p)
            primary.start()
            started.append(primary)
            upstream = p
            if lag_link:
                link = TcpProxy(p)
                upstream = link.port
            replica = ServerProcess(
                _redis_argv(
                    r := free_port(),
                    "--dir",
                    tmp,
                    "--replicaof",
                    "127.0.0.1",
                    str(upstream),
                ),
                r,
            )
            replica.start()
            started.append(replica)
            _wait(
                "replica sync",
                lambda: "master_link_status:up" in _cli(r, "INFO", "replication"),
            )
            sentinels = []
            for i in range(3):
                port = free_port()
                conf = os.path.join(tmp, f"sentinel-{i}.conf")
                with open(conf, "w") as fh:
                    fh.write(
                        f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                        f"sentinel monitor {SERVICE} 127.0.0.1 {p} 2\n"
                        f"sentinel down-after-milliseconds {SERVICE} {down_after_ms}\n"
                        f"sentinel failover-timeout {SERVICE} 10000\n"
                        f"sentinel parallel-syncs {SERVICE} 1\n"
                    )
                node = ServerProcess([sentinel_bin, conf], port)
                node.start()
                started.append(node)
                sentinels.append(node)
                _cli(port, "SENTINEL", "DEBUG", *SENTINEL_PERIODS)

            def known() -> bool:
                import redis

                for s in sentinels:
                    with redis.Redis(port=s.port, socket_timeout=2) as client:
                        if len(client.sentinel_sentinels(SERVICE)) < 2:
                            return False
                        replicas = client.sentinel_slaves(SERVICE)
                        if not any(int(x["port"]) == r for x in replicas):
                            return False
                return True

            _wait("sentinels discovering each other", known, timeout=45)
            yield Sentinel(primary, replica, sentinels, link=link)
        finally:
            for node in reversed(started):
                node.stop()
            if link is not None:
                link.close()


@dataclass
class Cluster:
    """A running three-primary Redis Cluster (see :func:`redis_cluster`)."""

    nodes: list[ServerProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A ``redis://`` URL of one node (a cluster client finds the others)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        port = random.randint(12000, 20000)
        ok = True
        for candidate in (port, port + 10000):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", candidate))
                except OSError:
                    ok = False
                    break
        if ok:
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


@contextlib.contextmanager
def redis_cluster() -> Iterator[Cluster]:
    """Three Redis primaries joined by ``redis-cli --cluster create`` (no replicas)."""
    cluster = Cluster()
    with tempfile.TemporaryDirectory(prefix="mc-cluster-") as tmp:
        try:
            for _ in range(3):
                port = _cluster_port()
                node = ServerProcess(
                    _redis_argv(
                        port,
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        os.path.join(tmp, f"nodes-{port}.conf"),
                        "--cluster-node-timeout",
                        "2000",
                        "--dir",
                        tmp,
                    ),
                    port,
                )
                node.start()
                cluster.nodes.append(node)
            out = subprocess.run(
                [
                    _binary("redis-cli", "redis-tools"),
                    "--cluster",
                    "create",
                    *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if out.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed: {out.stdout}")
            _wait(
                "cluster state ok",
                lambda: all(
                    "cluster_state:ok" in _cli(n.port, "CLUSTER", "INFO")
                    for n in cluster.nodes
                ),
            )
            yield cluster
        finally:
            for node in cluster.nodes:
                node.stop()


@dataclass
class PgBouncer:
    port: int
    proc: subprocess.Popen[bytes]

    def dsn_options(self) -> dict[str, object]:
        """``HOST``/``PORT`` for a Django ``DATABASES`` entry through the pooler."""
        return {"HOST": "127.0.0.1", "PORT": str(self.port)}


@contextlib.contextmanager
def pgbouncer(
    target_port: int = 5432, pool_mode: str = "transaction"
) -> Iterator[PgBouncer]:
    """PgBouncer (``pool_mode``) on a free port, forwarding every database to the
    PostgreSQL on ``target_port`` (trust auth, any user)."""
    binary = _binary("pgbouncer", "pgbouncer")
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="mc-pgbouncer-")
    os.chmod(tmp, 0o777)  # pgbouncer refuses to run as root: it runs as postgres
    conf = os.path.join(tmp, "pgbouncer.ini")
    users = os.path.join(tmp, "users.txt")
    with open(users, "w") as fh:
        fh.write('"postgres" ""\n')
    with open(conf, "w") as fh:
        fh.write(
            "[databases]\n"
            f"* = host=127.0.0.1 port={target_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
            f"unix_socket_dir =\nauth_type = trust\nauth_file = {users}\n"
            f"pool_mode = {pool_mode}\nmax_client_conn = 500\n"
            "default_pool_size = 20\nserver_reset_query =\n"
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {tmp}/pgbouncer.log\n"
        )
    for path in (conf, users):
        os.chmod(path, 0o644)
    argv = [binary, conf]
    if os.geteuid() == 0:
        argv = [binary, "-u", "postgres", conf]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_port("127.0.0.1", port, 15.0):
            log = ""
            with contextlib.suppress(OSError):
                log = open(f"{tmp}/pgbouncer.log").read()[-2000:]
            raise RuntimeError(f"pgbouncer did not listen on port {port}: {log}")
        yield PgBouncer(port, proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
