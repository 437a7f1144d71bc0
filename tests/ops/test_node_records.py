"""One corrupt record in the Redis node list is skipped, counted and logged: it
never breaks list_nodes() or the admin Nodes page."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.urls import reverse

from mega_cluster import metrics

from .conftest import wait_until
from .test_admin import PAGES, VIEW_PERMS, staff_client

CORRUPT = {
    "not-json": "{",
    "a-list": "[1, 2]",
    "no-heartbeat": json.dumps({"node_id": "no-heartbeat"}),
    "text-heartbeat": json.dumps({"node_id": "x", "heartbeat_at": "soon"}),
    "deep": "[" * 50_000,
}


def rejected(app_name: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "mega_cluster_records_rejected_total", {"app": app_name, "source": "nodes"}
    )
    return value or 0.0


@pytest.mark.redis
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("cluster", ["redis"], indirect=True)
def test_corrupt_node_records_are_skipped_counted_and_logged(cluster, caplog):
    import redis

    cluster.start()
    wait_until(lambda: cluster.node_registry.get(cluster.node_id), what="heartbeat")
    client = redis.Redis.from_url(settings.REDIS_URL)
    key = cluster.node_registry.store.key
    before = rejected(cluster.name) if metrics.ENABLED else 0.0
    try:
        for field, value in CORRUPT.items():
            client.hset(key, field, value)
        # a record that parses but whose fields have the wrong types
        bad_pid = {"node_id": "bad-pid", "heartbeat_at": 9e9, "pid": "many"}
        client.hset(key, "bad-pid", json.dumps(bad_pid))

        nodes = cluster.node_registry.list_nodes()
        assert [n.node_id for n in nodes] == [cluster.node_id]
        viewer, _ = staff_client(*VIEW_PERMS)
        page = viewer.get(reverse(PAGES["nodes"]))
        assert page.status_code == 200
        assert [row["node_id"] for row in page.context["rows"]] == [cluster.node_id]
    finally:
        client.hdel(key, *CORRUPT, "bad-pid")
        client.close()
    assert "skipped a corrupt node record" in caplog.text
    if metrics.ENABLED:
        # the five unreadable ones once (then dropped), the bad pid at each read
        assert rejected(cluster.name) - before >= len(CORRUPT) + 2


@pytest.mark.django_db(transaction=True)
def test_a_corrupt_database_node_row_is_skipped(unique_name, caplog):
    """The database store too: a row whose details are not an object is skipped
    and logged; the other nodes are listed."""
    from mega_cluster.models import Node
    from mega_cluster.testing import make_app
    from tests.factories import NodeFactory

    app = make_app(unique_name, {})
    try:
        NodeFactory(app_name=unique_name, node_id="good")
        NodeFactory(app_name=unique_name, node_id="bad", details=[1, 2])
        assert Node.objects.filter(app_name=unique_name).count() == 2
        assert [n.node_id for n in app.node_registry.list_nodes()] == ["good"]
        assert "skipped a corrupt node record 'bad'" in caplog.text
    finally:
        app.stop()
