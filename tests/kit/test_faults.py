"""Faults: lost locks, unreachable backends."""

from __future__ import annotations

import pytest

from mega_cluster.exceptions import BackendUnavailable, LockLost
from plugins.data_source.models import Field

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pair(cluster):
    cluster.configure(plugins=["data_source"])
    cluster(2)
    return cluster.plugins("data_source")


def test_a_lock_lost_under_a_running_section_ends_it_with_lock_lost(cluster, pair):
    """The section still runs (nothing is skipped) but run_exclusive reports
    LockLost; meanwhile another node can take the key."""
    a, _b = pair
    a.create_collection("orders", fields={"note": "text"})
    with cluster.losing_lock("data_source:orders") as lost:
        with pytest.raises(LockLost, match="data_source:orders"):
            a.remove_field("orders", "note")
    assert [lock.lost for lock in lost] == [True]
    assert not Field.objects.exists()  # the section ran


def test_lose_lock_marks_the_holder_lost_at_once(cluster, pair):
    a, b = pair
    with pytest.raises(LockLost):
        with a.lock_manager.lock("k") as lock:
            (lost,) = cluster.lose_lock("k")
            assert lost is lock and lock.lost
            other = b.lock_manager.try_acquire("k")  # free for the others now
            assert other is not None
            other.release()
    assert a.lock_manager.stats()["lost"] == 1
    with pytest.raises(
        AssertionError, match="no node of the cluster holds that lock; held now: none"
    ):
        cluster.lose_lock("k")


def test_pubsub_unavailable_refuses_sends_and_the_node_replays_what_it_missed(
    cluster, pair
):
    a, b = pair
    a.create_collection("first")
    cluster.deliver()
    with cluster.unavailable("pubsub", node=b):
        with pytest.raises(BackendUnavailable, match="cannot publish"):
            b.app.pubsub_manager.publish("news", {"n": 1})
        with pytest.raises(BackendUnavailable):
            b.app.pubsub_manager.backend.ping()  # what health checks call
        a.create_collection("missed")
        cluster.deliver()
        assert b.get_collection("missed") is None
    reloads = b.reloads
    cluster.deliver()  # the reconnect: the missed message comes from the outbox
    assert b.reloads == reloads and b.get_collection("missed")
    assert b.app.outbox.replays == 1
    a.create_collection("after")
    cluster.deliver()
    assert b.get_collection("after")


def test_locks_unavailable_raise_backend_unavailable_on_that_node_only(cluster, pair):
    a, b = pair
    with cluster.unavailable("locks", node="node-1"):
        with pytest.raises(
            BackendUnavailable, match="locks backend of node node-1"
        ) as err:
            a.create_collection("orders")
        assert isinstance(err.value, ConnectionError)
        b.create_collection("orders")  # node-2 still reaches its locks
    a.create_collection("users")


def test_event_queue_unavailable_fails_publish_and_the_runner_skips_the_node(cluster):
    a, b = cluster(2, settings={"PLUGINS": []})
    ran = []
    for node in (a, b):
        node.event_queue.subscribe(
            "jobs", process=lambda p, c, node=node: ran.append(node.node_id)
        )
    with cluster.unavailable("event_queue", node=a):
        with pytest.raises(BackendUnavailable):
            a.event_queue.publish("jobs", {})
        b.event_queue.publish("jobs", {})
        b.event_queue.publish("jobs", {})
        assert {x.node for x in cluster.run_events()} == {"node-2"}
    assert ran == ["node-2", "node-2"]


def test_cache_unavailable_on_one_node_only(cluster):
    """The node's cache store raises; the other node's, on the same store, not."""
    cluster.configure(plugins=["auth_policy"])
    cluster(2)
    a, b = cluster.plugins("auth_policy")
    with cluster.unavailable("cache", node=a):
        with pytest.raises(BackendUnavailable, match="cache backend of node node-1"):
            a.policy()
        with pytest.raises(BackendUnavailable):
            a.app.cache.set("k", 1)
        assert b.policy()["token_expires_in"] == 86400
    assert a.policy()["token_expires_in"] == 86400


def test_unknown_primitive_is_refused(cluster):
    cluster(1, settings={"PLUGINS": []})
    with pytest.raises(
        ValueError, match="one of pubsub, locks, event_queue, cache, got 'database'"
    ):
        with cluster.unavailable("database"):
            pass
