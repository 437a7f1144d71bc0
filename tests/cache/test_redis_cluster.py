"""mega_cluster.cache.redis_cluster.RedisClusterCache, Django's RedisCache on a
Redis Cluster client: many-key calls across slots, several LOCATIONs (the first
one down), Django's "timeout 0 deletes". Keys carry the test's name as
KEY_PREFIX and expire."""

from __future__ import annotations

import pytest
from django.core.cache import caches
from django.test import override_settings

from tests.servers import free_port

pytestmark = pytest.mark.redis


@pytest.fixture
def cluster_cache(cluster_topology, unique_name):
    nodes = [f"redis://127.0.0.1:{n.port}/0" for n in cluster_topology.nodes]
    config = {
        "BACKEND": "mega_cluster.cache.redis_cluster.RedisClusterCache",
        # the first LOCATION answers nothing: the client asks the next
        "LOCATION": ",".join([f"redis://127.0.0.1:{free_port()}/0", *nodes[1:]]),
        "KEY_PREFIX": unique_name,
    }
    with override_settings(CACHES={"default": {}, "cluster": config}):
        yield caches["cluster"]


def test_many_key_calls_cross_slots(cluster_cache):
    data = {f"k{i}": i for i in range(50)}  # spread over every node
    cluster_cache.set_many(data, 60)
    assert cluster_cache.get_many([*data, "absent"]) == data
    cluster_cache.delete_many(list(data)[:25])
    assert cluster_cache.get_many(list(data)) == dict(list(data.items())[25:])
    assert cluster_cache.incr("k30", 5) == 35


def test_a_zero_timeout_deletes(cluster_cache):
    # (clear() is not tried: it would flush the run's shared cluster fixture)
    cluster_cache.set_many({"a": 1, "b": 2}, 60)
    cluster_cache.set_many({"a": 3, "b": 4}, 0)
    assert cluster_cache.get_many(["a", "b"]) == {}
