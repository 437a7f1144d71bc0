"""The near cache stays coherent across real processes through Redis pub/sub."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from django.conf import settings

from mega_cluster.cache import Cache
from mega_cluster.testing import make_app

from ..procs import ROOT, ProcessGroup, child_env

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

BOUND = 0.1  # seconds: a write on node 1 is seen by node 2 within this


class Node2:
    """The child process: one command line in, one answer line out."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, f"node 2 exited: {self.proc.communicate()[1][-2000:]}"
        return line.strip()

    def tell(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str) -> str:
        self.tell(command)
        return self.read()


@pytest.fixture
def node1(unique_name: str) -> Iterator[Cache]:
    app = make_app(
        unique_name,
        {
            "CACHE": {"DEFAULT_STORE": "django_redis"},
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
        },
    )
    yield app.cache_manager.create_cache("near", near_cache=True)
    app.stop()


def spawn_node2(procs: ProcessGroup, unique_name: str) -> Node2:
    """Start node 2 with a stdin pipe; ``procs`` kills it at teardown."""
    proc = subprocess.Popen(
        [sys.executable, "tests/cluster/cache_near_child.py"],
        cwd=ROOT,
        env=child_env({"MC_APP_NAME": unique_name}),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    procs.procs.append(proc)
    return Node2(proc)


def latency(node1: Cache, node2: Node2, change, key: str, expected) -> float:
    """Seconds from the end of ``change()`` on node 1 to node 2 seeing ``expected``."""
    assert node2.ask(f"watch {key} {json.dumps(expected)}") == "watching"
    change()
    done = time.time()
    seen = node2.read()
    assert seen != "timeout", f"node 2 never saw {key}={expected!r}"
    return float(seen) - done


def test_a_set_on_node_1_is_seen_by_node_2_within_100_ms(procs, unique_name, node1):
    """Node 2 serves a key from its near cache (a write behind the cache's back is
    not seen); after set / reset on node 1 it sees the change within 100 ms."""
    # Before node 2 subscribes: no invalidation of it can be in flight below.
    node1.set("k", "v0")
    node2 = spawn_node2(procs, unique_name)
    assert node2.read() == "ready"
    assert node2.ask("get k") == '"v0"'
    node1.store.set(node1.store_key("k"), "sneaky", None)  # no invalidation sent
    assert node2.ask("get k") == '"v0"', "node 2 did not use its near cache"

    took = latency(node1, node2, lambda: node1.set("k", "v1"), "k", "v1")
    print(f"set seen by node 2 after {took * 1000:.1f} ms")
    assert took <= BOUND, f"node 2 saw the set after {took * 1000:.0f} ms"
    assert node2.ask("get k") == '"v1"'

    took = latency(node1, node2, node1.reset, "k", "<miss>")
    print(f"reset seen by node 2 after {took * 1000:.1f} ms")
    assert took <= BOUND, f"node 2 saw the reset after {took * 1000:.0f} ms"
    node2.tell("quit")
    assert node2.proc.wait(timeout=20) == 0


@pytest.fixture
def plain1(unique_name: str) -> Iterator[Cache]:
    """Node 1's cache of the same namespace, without a near layer of its own."""
    app = make_app(
        unique_name,
        {
            "CACHE": {"DEFAULT_STORE": "django_redis"},
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
        },
    )
    yield app.cache_manager.create_cache("near")
    app.stop()


def test_a_writer_without_a_near_layer_invalidates_node_2(procs, unique_name, plain1):
    """Node 1 writes through a plain Cache (no near layer) on the namespace whose
    near cache node 2 uses: set, mset, delete, incr and reset each reach node 2
    (watched for 5 s, far below the 30 s near_ttl a lost invalidation would take),
    because node 2's near layer keeps the namespace's marker in the store and
    node 1 reads it in the round trip of each write."""
    plain1.set("k", "v0")
    node2 = spawn_node2(procs, unique_name)
    assert node2.read() == "ready"
    assert node2.ask("get k") == '"v0"'
    plain1.store.set(plain1.store_key("k"), "sneaky", None)  # no invalidation sent
    assert node2.ask("get k") == '"v0"', "node 2 did not use its near cache"

    def seen(change, key: str, expected) -> None:
        assert node2.ask(f"watch {key} {json.dumps(expected)}") == "watching"
        change()
        assert node2.read() != "timeout", f"node 2 kept a stale {key!r}"

    seen(lambda: plain1.set("k", "v1"), "k", "v1")
    seen(lambda: plain1.mset({"k": "v2", "j": 1}), "k", "v2")
    seen(lambda: plain1.delete("k"), "k", "<miss>")
    assert node2.ask("get j") == "1"  # now in node 2's near cache
    seen(lambda: plain1.incr("j"), "j", 2)
    seen(plain1.reset, "j", "<miss>")
    node2.tell("quit")
    assert node2.proc.wait(timeout=20) == 0
