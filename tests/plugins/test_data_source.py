"""data_source: a schema registry in memory on every node, kept in step by sync
messages after commit; schema changes of a collection under a cluster lock."""

from __future__ import annotations

import threading
import time

import pytest
from django.core.exceptions import ValidationError
from django.db import transaction

from mega_cluster.exceptions import LockTimeout
from plugins.data_source.models import Collection, Field
from plugins.data_source.plugin import (
    DataSourcePlugin,
    DuplicateName,
    UnknownCollection,
)

from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pair(nodes):
    return nodes(DataSourcePlugin, "data_source")


def test_create_on_a_reaches_b_within_a_second(pair):
    """A collection created on node A is in node B's memory within 1 s; node A's
    memory changes only when the transaction commits."""
    a, b = pair
    with transaction.atomic():
        a.create_collection("orders", "Orders", {"total": "decimal"})
        assert a.get_collection("orders") is None
    assert a.get_collection("orders")["fields"] == {
        "total": {"type": "decimal", "required": False}
    }
    started = time.monotonic()
    wait_until(lambda: b.get_collection("orders"), 1.0, "orders on node B")
    assert time.monotonic() - started < 1.0
    assert b.schema == a.schema


def test_update_add_remove_delete_are_reflected_on_the_other_node(pair):
    a, b = pair
    a.create_collection("orders")
    wait_until(lambda: b.get_collection("orders"), 1.0, "create")
    b.add_field("orders", "status", "string")
    wait_until(lambda: "status" in a.get_collection("orders")["fields"], 1.0, "add")
    a.update_collection("orders", title="Customer orders")
    wait_until(
        lambda: b.get_collection("orders")["title"] == "Customer orders", 1.0, "title"
    )
    assert b.remove_field("orders", "status") is True
    wait_until(lambda: a.get_collection("orders")["fields"] == {}, 1.0, "remove")
    assert a.delete_collection("orders") is True
    wait_until(lambda: b.get_collection("orders") is None, 1.0, "delete")
    assert a.delete_collection("orders") is False


def test_rolled_back_change_reaches_no_node(pair):
    a, b = pair
    with pytest.raises(RuntimeError), transaction.atomic():
        a.create_collection("ghost")
        raise RuntimeError("roll back")
    a.create_collection("after")  # a later message proves B is listening
    wait_until(lambda: b.get_collection("after"), 1.0, "after")
    assert a.get_collection("ghost") is None
    assert b.get_collection("ghost") is None


def test_two_nodes_removing_one_field_at_once_remove_it_once(pair):
    """Node A and node B remove the same field at the same moment: exactly one
    removes it, the other returns False, neither raises."""
    a, b = pair
    a.create_collection("orders", fields={"note": "text", "total": "integer"})
    wait_until(lambda: b.get_collection("orders"), 1.0, "orders on B")
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
    for plugin in (a, b):
        wait_until(
            lambda p=plugin: list(p.get_collection("orders")["fields"]) == ["total"],
            1.0,
            "the field gone on both nodes",
        )


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


def test_sync_gap_reloads_everything(pair):
    """A change made behind the plugin's back appears after handle_sync_gap()."""
    _, b = pair
    Field.objects.create(
        collection=Collection.objects.create(name="raw"), name="x", type="json"
    )
    assert b.get_collection("raw") is None
    reloads = b.reloads
    b.handle_sync_gap()
    assert b.get_collection("raw")["fields"] == {
        "x": {"type": "json", "required": False}
    }
    assert b.reloads == reloads + 1


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
