"""Sharded pub/sub on a Redis Cluster when the app's slot changes hands: a slot
moved to another primary (what a failover or a resharding does) and a kill -9 of
the slot's owner followed by its restart. Each time the listener reconnects by
itself to the slot's owner and calls the gap hook (never a silent switch), and
messages published afterwards arrive."""

from __future__ import annotations

import subprocess
import time

import pytest
import redis

from mega_cluster.exceptions import BackendUnavailable
from mega_cluster.testing import make_app
from tests.pubsub.helpers import Recorder
from tests.topologies import redis_cluster

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def _owner(port: int, slot: int) -> int:
    """The port of the primary that owns ``slot`` (asked of the node at ``port``)."""
    with redis.Redis(port=port, socket_timeout=5) as client:
        for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return int(primary[1])
    raise AssertionError(f"slot {slot} has no owner")


def _move_slot(ports: list[int], slot: int, target: int) -> None:
    """Give ``slot`` (holding no keys) to the primary at ``target``."""
    with redis.Redis(port=target, socket_timeout=5) as client:
        target_id = client.execute_command("CLUSTER", "MYID").decode()
    for port in [target, *(p for p in ports if p != target)]:
        with redis.Redis(port=port, socket_timeout=5) as client:
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)


def _published(app, payload: str) -> bool:
    try:
        app.pubsub_manager.publish("news", payload)
    except BackendUnavailable:
        return False
    return True


def test_a_moved_slot_and_a_restarted_owner_are_gaps_then_delivery_resumes(
    unique_name,
):
    with redis_cluster() as topology:
        ports = [n.port for n in topology.nodes]
        pubsub = {
            "BACKEND": "redis",
            "OPTIONS": {"URL": topology.url, "CLUSTER": True},
            "RECONNECT_MAX_DELAY": 0.5,
        }
        a = make_app(unique_name, {"PUBSUB": pubsub}, node_id=f"{unique_name}-a")
        b = make_app(unique_name, {"PUBSUB": pubsub}, node_id=f"{unique_name}-b")
        try:
            seen, gaps = Recorder("seen"), Recorder("gaps")
            b.pubsub_manager.subscribe("news", seen, on_gap=lambda: gaps("gap"))
            assert _published(a, "before")
            assert seen.wait(1, timeout=10) == ["before"]
            wire = b.pubsub_manager.backend.wire_channel("news")
            assert wire == f"mc:{{{unique_name}}}:news"
            slot = redis.cluster.key_slot(wire.encode())
            owner = _owner(ports[0], slot)

            # 1. the slot moves to another primary: its old owner unsubscribes us
            target = next(p for p in ports if p != owner)
            _move_slot(ports, slot, target)
            assert gaps.wait(1, timeout=30) == ["gap"]
            _until(lambda: _published(a, "moved"), 30, "a publish after the move")
            assert seen.wait_for_item("moved", timeout=10)[-1] == "moved"

            # 2. kill -9 of the new owner, then its restart (same cluster config)
            node = next(n for n in topology.nodes if n.port == target)
            assert node.proc is not None
            node.proc.kill()
            node.proc.wait(timeout=10)
            node.proc = None
            time.sleep(1.0)  # the listener sees the connection drop meanwhile
            node.start()
            _until(
                lambda: (
                    "cluster_state:ok"
                    in subprocess.run(
                        ["redis-cli", "-p", str(target), "CLUSTER", "INFO"],
                        capture_output=True,
                        text=True,
                        timeout=5,
                        check=False,
                    ).stdout
                ),
                30,
                "the cluster back in state ok",
            )
            assert gaps.wait(2, timeout=30) == ["gap", "gap"]
            _until(lambda: _published(a, "restarted"), 30, "a publish after restart")
            assert seen.wait_for_item("restarted", timeout=10)[-1] == "restarted"
        finally:
            a.stop()
            b.stop()
