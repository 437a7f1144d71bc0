"""Redis Cluster: a cluster client works (the lock contract suite runs on the
cluster fixture too), a one-server client pointed at a cluster node is refused
with the setting to change, and the node registry follows the locks' settings."""

from __future__ import annotations

import time

import pytest
from django.core.exceptions import ImproperlyConfigured

from mega_cluster.nodes.stores import RedisNodeStore, store_for
from mega_cluster.testing import make_app

pytestmark = pytest.mark.redis


def test_a_plain_url_to_a_cluster_node_is_refused_with_the_fix(
    cluster_topology, unique_name
):
    locks = {"BACKEND": "redis", "OPTIONS": {"URL": cluster_topology.url}}
    app = make_app(unique_name, {"LOCKS": locks})
    try:
        with pytest.raises(ImproperlyConfigured, match=r"OPTIONS\['CLUSTER'\] = True"):
            app.lock_manager.try_acquire("k")
    finally:
        app.stop()


def test_the_node_registry_runs_on_the_cluster(cluster_topology, unique_name):
    options = {"URL": cluster_topology.url, "CLUSTER": True}
    app = make_app(unique_name, {"LOCKS": {"BACKEND": "redis", "OPTIONS": options}})
    store = store_for(app)
    try:
        assert isinstance(store, RedisNodeStore)
        store.put({"node_id": "n1", "heartbeat_at": time.time()}, drop_after=30)
        store.put({"node_id": "n2", "heartbeat_at": time.time()}, drop_after=30)
        assert sorted(r["node_id"] for r in store.all(drop_after=30)) == ["n1", "n2"]
        store.remove("n1")
        assert [r["node_id"] for r in store.all(drop_after=30)] == ["n2"]
        store.ping()
    finally:
        store.remove("n2")
        store.close()
        app.stop()
