"""``manage.py cluster_status``: tables and --json from the managers' APIs."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from .conftest import dead_letter, wait_until


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("cluster_status", *args, stdout=out)
    return out.getvalue()


def test_json_lists_nodes_locks_and_queues(cluster):
    """--json has this node, the held lock with its holder and the dead event."""
    event_id = dead_letter(cluster, "orders")
    cluster.start()
    wait_until(lambda: cluster.node_registry.get(cluster.node_id), what="heartbeat")
    lock = cluster.lock_manager.acquire("reports:daily", ttl=30)
    try:
        data = json.loads(run("--json"))
    finally:
        lock.release()
    (snap,) = data["apps"]
    assert snap["app"] == cluster.name and snap["errors"] == {}
    assert [n["node_id"] for n in snap["nodes"]] == [cluster.node_id]
    assert snap["nodes"][0]["status"] == "alive"
    (held,) = snap["locks"]
    assert (held["key"], held["holder"], held["fence"]) == (
        "reports:daily",
        cluster.node_id,
        lock.fence,
    )
    assert 0 < held["ttl_left"] <= 30
    (queue,) = snap["queues"]
    assert queue["channel"] == "orders" and queue["dead"] == 1
    assert queue["pending"] == 0
    assert event_id in {d.id for d in cluster.event_queue.dead_letters()}


def test_tables_name_every_section(cluster):
    """The text output has a table per section with the lock key in it."""
    lock = cluster.lock_manager.acquire("table-lock", ttl=30)
    try:
        text = run()
    finally:
        lock.release()
    assert f"Cluster app {cluster.name}" in text
    assert "Locks (1 held)" in text and "table-lock" in text
    assert "KEY" in text and "HOLDER" in text and "FENCE" in text
    assert "Nodes (" in text and "Queues (" in text


@pytest.mark.django_db
def test_unknown_app_is_a_command_error():
    """--app with a name that is not configured fails with the configured names."""
    with pytest.raises(CommandError, match="No cluster app named 'nope'"):
        run("--app", "nope")
