"""data_source: a schema registry in memory on every node, kept in step by sync
messages after commit; schema changes of a collection under a cluster lock.

Two nodes of the testing kit (``cluster`` fixture); the same plugin across real
processes is in tests/cluster/test_plugin_data_source.py.
"""

from __future__ import annotations

import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from mega_cluster.exceptions import LockLost, LockTimeout
from plugins.data_source.models import Collection, Field
from plugins.data_source.plugin import DuplicateName, UnknownCollection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pair(cluster):
    cluster.configure(plugins=["data_source"])
    cluster(2)
    return cluster.plugins("data_source")


def schema(node):
    return node.plugins["data_source"].schema


def test_create_on_a_reaches_b_after_commit(cluster, pair):
    """A collection created on node A reaches node B's memory by one sync message
    sent after commit; node A's memory changes only when the transaction commits."""
    a, b = pair
    with transaction.atomic():
        a.create_collection("orders", "Orders", {"total": "decimal"})
        assert a.get_collection("orders") is None
        assert cluster.published() == []
    assert a.get_collection("orders")["fields"] == {
        "total": {"type": "decimal", "required": False}
    }
    cluster.deliver()
    assert cluster.assert_same(schema) == a.schema
    cluster.assert_delivered(b, "plugin:data_source", {"collection": "orders"})


def test_update_add_remove_delete_are_reflected_on_the_other_node(cluster, pair):
    a, b = pair
    a.create_collection("orders")
    cluster.deliver()
    b.add_field("orders", "status", "string")
    cluster.deliver()
    assert "status" in a.get_collection("orders")["fields"]
    a.update_collection("orders", title="Customer orders")
    cluster.deliver()
    assert b.get_collection("orders")["title"] == "Customer orders"
    assert b.remove_field("orders", "status") is True
    cluster.deliver()
    assert a.get_collection("orders")["fields"] == {}
    assert a.delete_collection("orders") is True
    cluster.deliver()
    assert b.get_collection("orders") is None
    assert a.delete_collection("orders") is False
    cluster.assert_same(schema)


def test_rolled_back_change_reaches_no_node(cluster, pair):
    a, b = pair
    with pytest.raises(RuntimeError), transaction.atomic():
        a.create_collection("ghost")
        raise RuntimeError("roll back")
    assert cluster.published() == []
    assert a.get_collection("ghost") is None
    cluster.deliver()
    assert b.get_collection("ghost") is None


def test_two_nodes_removing_one_field_at_once_remove_it_once(cluster, pair):
    """Node A and node B remove the same field at the same moment: exactly one
    removes it, the other returns False, neither raises."""
    a, b = pair
    a.create_collection("orders", fields={"note": "text", "total": "integer"})
    cluster.deliver()
    results: dict[str, object] = {}
    go = threading.Event()

    def remove(plugin, name):
        go.wait(5)
        try:
            results[name] = plugin.remove_field("orders", "note")
        except Exception as exc:  # recorded, asserted below
            results[name] = exc

    threads = [
        threading.Thread(target=remove, args=(p, n)) for p, n in ((a, "a"), (b, "b"))
    ]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(10)
    assert sorted(results.values(), key=str) == [False, True], results
    assert list(Field.objects.values_list("name", flat=True)) == ["total"]
    cluster.deliver()
    assert list(cluster.assert_same(schema)["orders"]["fields"]) == ["total"]


def test_removal_waits_for_the_lock_and_never_skips(pair):
    """While node B holds the collection's lock, node A's removal times out with
    LockTimeout and removes nothing."""
    a, b = pair
    a.create_collection("orders", fields={"note": "text"})
    a.lock_wait = 0.2
    with b.lock_manager.lock("data_source:orders"):
        with pytest.raises(LockTimeout):
            a.remove_field("orders", "note")
    assert Field.objects.filter(name="note").exists()
    assert a.remove_field("orders", "note") is True


def test_a_change_whose_lock_was_lost_is_reported(cluster, pair):
    """The section ran unprotected: remove_field raises LockLost, never a
    silent success."""
    a, _ = pair
    a.create_collection("orders", fields={"note": "text"})
    with cluster.losing_lock("data_source:orders"), pytest.raises(LockLost):
        a.remove_field("orders", "note")


def test_a_missed_message_is_replayed_and_a_pruned_one_reloads(cluster, pair):
    """Node B misses a change: the next message shows the gap and B replays the
    missed one from the outbox (no reload). When the outbox no longer holds it
    (retention), B reloads everything, including a change made behind the
    plugin's back."""
    from mega_cluster.models import OutboxMessage

    a, b = pair
    a.create_collection("orders")
    cluster.deliver()
    cluster.drop_next(b)
    a.add_field("orders", "total", "decimal")
    reloads = b.reloads
    a.create_collection("users")
    cluster.deliver()
    assert b.reloads == reloads
    assert b.get_collection("orders")["fields"]["total"]["type"] == "decimal"

    cluster.drop_next(b)
    a.add_field("orders", "note", "text")
    OutboxMessage.objects.all().delete()  # what RETENTION does to old rows
    Field.objects.create(
        collection=Collection.objects.create(name="raw"), name="x", type="json"
    )
    a.create_collection("teams")
    cluster.deliver()
    assert b.reloads == reloads + 1
    assert b.get_collection("raw")["fields"] == {
        "x": {"type": "json", "required": False}
    }
    assert b.get_collection("orders")["fields"]["note"]["type"] == "text"


def test_bad_input_has_clear_errors(pair):
    a, _ = pair
    with pytest.raises(ValidationError, match="Invalid collection name"):
        a.create_collection("Orders!")
    with pytest.raises(ValidationError, match="Unknown field type 'blob'"):
        a.create_collection("orders", fields={"x": "blob"})
    a.create_collection("orders")
    with pytest.raises(DuplicateName):
        a.create_collection("orders")
    with pytest.raises(UnknownCollection):
        a.add_field("missing", "x", "string")
    with pytest.raises(UnknownCollection):
        a.update_collection("missing", title="x")
    a.add_field("orders", "x", "string")
    with pytest.raises(DuplicateName):
        a.add_field("orders", "x", "integer")
    assert Collection.objects.count() == 1
