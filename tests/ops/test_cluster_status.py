"""``manage.py cluster_status``: tables and --json from the managers' APIs."""

from __future__ import annotations

import io
import json
import time

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
    # Plugins started with the app may subscribe channels of their own.
    (queue,) = [q for q in snap["queues"] if q["channel"] == "orders"]
    assert queue["dead"] == 1
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


def test_oldest_pending_age_of_a_waiting_event(cluster):
    """An event nobody consumes yet shows how long it has been waiting."""
    cluster.event_queue.publish("reports", {"n": 1})
    cluster.event_queue.publish("reports", {"n": 2}, delay=3600)  # not due: ignored
    time.sleep(0.3)
    (snap,) = json.loads(run("--json"))["apps"]
    (queue,) = snap["queues"]
    assert queue["channel"] == "reports" and queue["pending"] == 2
    assert 0.3 <= queue["oldest_pending_age"] < 10
    assert queue["consumers"] == 0


@pytest.mark.parametrize("backend", ["memory", "database"])
@pytest.mark.django_db(transaction=True)
def test_backends_report_when_the_oldest_due_event_became_due(backend, unique_name):
    """oldest_pending() is the due time of the longest-waiting due event, or None."""
    from mega_cluster.testing import make_app

    app = make_app(unique_name, {"EVENT_QUEUE": {"BACKEND": backend}})
    try:
        assert app.event_queue.backend.oldest_pending("jobs") is None
        before = time.time()
        app.event_queue.publish("jobs", 1)
        app.event_queue.publish("jobs", 2)
        app.event_queue.publish("later", 3, delay=3600)
        oldest = app.event_queue.backend.oldest_pending("jobs")
        assert before - 0.01 <= oldest <= time.time()
        assert app.event_queue.backend.oldest_pending("later") is None
    finally:
        app.stop()
