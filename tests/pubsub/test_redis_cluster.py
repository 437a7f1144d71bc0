"""Pub/sub on a Redis Cluster is sharded pub/sub: an app's channels are hash-tagged
with its name (one slot), subscribed with SSUBSCRIBE on the slot's owner and
published with SPUBLISH; nothing goes through the cluster-wide PUBLISH."""

from __future__ import annotations

import pytest
import redis

from mega_cluster.testing import make_app

from .helpers import Recorder, wait_for

pytestmark = pytest.mark.redis


def test_channels_are_shard_channels_on_the_owner_of_the_apps_slot(
    cluster_topology, unique_name
):
    pubsub = {
        "BACKEND": "redis",
        "OPTIONS": {"URL": cluster_topology.url, "CLUSTER": True},
    }
    a = make_app(unique_name, {"PUBSUB": pubsub}, node_id=f"{unique_name}-a")
    b = make_app(unique_name, {"PUBSUB": pubsub}, node_id=f"{unique_name}-b")
    try:
        seen = Recorder()
        b.pubsub_manager.subscribe("news", seen)
        wire = b.pubsub_manager.backend.wire_channel("news")
        assert wire == f"mc:{{{unique_name}}}:news"
        cluster = redis.cluster.RedisCluster.from_url(cluster_topology.url)
        try:
            owner = cluster.get_node_from_key(wire)
            with redis.Redis(host=owner.host, port=owner.port) as node:
                assert wire.encode() in node.execute_command(
                    "PUBSUB", "SHARDCHANNELS", f"mc:{{{unique_name}}}:*"
                )
            for other in cluster.get_primaries():
                with redis.Redis(host=other.host, port=other.port) as node:
                    assert node.pubsub_channels(f"mc:*{unique_name}*") == []
        finally:
            cluster.close()
        a.pubsub_manager.publish("news", {"n": 1})
        assert wait_for(lambda: seen.items == [{"n": 1}], timeout=10), seen.items
    finally:
        a.stop()
        b.stop()


def test_a_cluster_url_may_name_several_nodes_the_first_one_down(
    cluster_topology, unique_name
):
    """The client learns the cluster from the first node of OPTIONS['URL'] that
    answers: pub/sub, locks and the node registry work while the first is down."""
    from tests.servers import free_port

    nodes = ",".join(f"127.0.0.1:{n.port}" for n in cluster_topology.nodes[1:])
    options = {"URL": f"redis://127.0.0.1:{free_port()},{nodes}/0", "CLUSTER": True}
    app = make_app(
        unique_name,
        {
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": options},
            "LOCKS": {"BACKEND": "redis", "OPTIONS": options},
        },
    )
    try:
        seen = Recorder()
        app.pubsub_manager.subscribe("news", seen)
        app.pubsub_manager.publish("news", 1, skip_self=False)
        assert wait_for(lambda: seen.items == [1], timeout=10), seen.items
        with app.lock_manager.lock("k") as handle:
            assert handle.fence > 0
    finally:
        app.stop()
