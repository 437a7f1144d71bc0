"""Pub/sub between real processes on Redis and NATS: delivery, order, skip-self,
reconnect after a broker restart."""

from __future__ import annotations

import json
import time

import pytest
from django.conf import settings

from mega_cluster.exceptions import BackendUnavailable
from mega_cluster.testing import make_app
from tests.servers import nats_server, redis_server

pytestmark = pytest.mark.cluster

BACKENDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("nats", marks=pytest.mark.nats),
]
NODES = 3
COUNT = 500


def _wait_files(directory, pattern, n, timeout):
    deadline = time.monotonic() + timeout
    while len(list(directory.glob(pattern))) < n:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"only {list(directory.glob(pattern))} within {timeout}s"
            )
        time.sleep(0.05)


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_processes_500_messages_each(backend, procs, unique_name, tmp_path):
    """Each of 3 processes publishes 500 messages; each receives exactly the other
    two's 1000, none of its own, in each publisher's order."""
    url = settings.REDIS_URL if backend == "redis" else settings.NATS_URL
    env = {"MC_COUNT": str(COUNT), "MC_EXPECTED": str(COUNT * (NODES - 1))}
    for index in range(NODES):
        procs.spawn(
            [
                "tests/cluster/pubsub_child.py",
                "load",
                backend,
                url,
                unique_name,
                str(index),
                str(tmp_path),
            ],
            env,
        )
    _wait_files(tmp_path, "ready-*", NODES, 60)
    (tmp_path / "go").touch()
    for code, _out, err in procs.wait_all(timeout=90):
        assert code == 0, err[-3000:]

    for index in range(NODES):
        result = json.loads((tmp_path / f"result-{index}.json").read_text())
        got = result["received"]
        assert len(got) == COUNT * (NODES - 1)
        assert all(m["from"] != str(index) for m in got)
        for other in range(NODES):
            if other == index:
                continue
            seq = [m["i"] for m in got if m["from"] == str(other)]
            assert seq == list(range(COUNT)), f"node {index} from {other}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_broker_restart_mid_run(backend, procs, unique_name, tmp_path):
    """Two listening processes survive a broker restart: they reconnect by
    themselves, on_gap fires and messages published later arrive."""
    server_cm = redis_server() if backend == "redis" else nats_server(jetstream=False)
    with server_cm as server:
        url = (
            f"redis://127.0.0.1:{server.port}/0"
            if backend == "redis"
            else f"nats://127.0.0.1:{server.port}"
        )
        for index in range(2):
            procs.spawn(
                [
                    "tests/cluster/pubsub_child.py",
                    "listen",
                    backend,
                    url,
                    unique_name,
                    str(index),
                    str(tmp_path),
                ]
            )
        _wait_files(tmp_path, "ready-*", 2, 60)
        publisher = make_app(
            unique_name,
            {
                "PUBSUB": {
                    "BACKEND": backend,
                    "OPTIONS": {"URL": url},
                    "RECONNECT_MAX_DELAY": 0.5,
                }
            },
        )
        try:
            publisher.pubsub_manager.publish("load", {"phase": "before"})
            time.sleep(0.3)
            server.restart()
            deadline = time.monotonic() + 30
            i = 0
            while any(p.poll() is None for p in procs.procs):
                assert time.monotonic() < deadline, "listeners never got 'after'"
                try:
                    publisher.pubsub_manager.publish("load", {"phase": "after", "i": i})
                    i += 1
                except BackendUnavailable:
                    pass
                time.sleep(0.05)
        finally:
            publisher.stop()
    for code, _out, err in procs.wait_all(timeout=30):
        assert code == 0, err[-3000:]
    for index in range(2):
        result = json.loads((tmp_path / f"result-{index}.json").read_text())
        phases = [m["phase"] for m in result["received"]]
        assert phases[0] == "before"
        assert "after" in phases
        assert result["gaps"] >= 1
        after = [m["i"] for m in result["received"] if m["phase"] == "after"]
        assert after == sorted(after)
