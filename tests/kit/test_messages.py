"""deliver(), what nodes sent and received, dropped messages and gaps."""

from __future__ import annotations

import pytest
from django.db import transaction

from plugins.data_source.models import Collection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pair(cluster):
    cluster.configure(plugins=["data_source"])
    cluster(2)
    return cluster.plugins("data_source")


def test_messages_wait_for_deliver_and_then_arrive_in_order(cluster, pair):
    a, b = pair
    a.create_collection("orders")
    a.create_collection("users")
    assert b.schema == {}  # held until the test delivers
    assert [m.payload for m in cluster.wire.pending("node-2")] == [
        {"collection": "orders"},
        {"collection": "users"},
    ]
    delivered = cluster.deliver()
    assert [(n, m.payload["collection"]) for n, m in delivered] == [
        ("node-2", "orders"),
        ("node-2", "users"),
    ]
    assert set(b.schema) == {"orders", "users"}
    cluster.assert_same(lambda node: node.plugins["data_source"].schema)
    assert cluster.deliver() == []  # nothing left


def test_sent_and_received_are_recorded_per_node(cluster, pair):
    a, _b = pair
    with transaction.atomic():
        a.create_collection("orders")
        assert cluster.published() == []  # sync messages go out after commit
    sent = cluster.assert_published(
        "node-1", "plugin:data_source", {"collection": "orders"}
    )
    assert (sent.kind, sent.seq, sent.node) == ("sync", 1, "node-1")
    cluster.deliver()
    got = cluster.assert_delivered("node-2", "plugin:data_source")
    assert got.id == sent.id
    assert cluster.delivered("node-1") == []  # skip-self


def test_pubsub_messages_are_held_and_captured_too(cluster):
    a, b = cluster(2)
    seen = {"node-1": [], "node-2": []}
    for node in (a, b):
        node.pubsub_manager.subscribe("news", seen[node.node_id].append)
    a.pubsub_manager.publish("news", {"n": 1})
    a.pubsub_manager.publish("news", {"n": 2}, skip_self=False)
    assert seen == {"node-1": [], "node-2": []}
    cluster.deliver()
    assert seen == {"node-1": [{"n": 2}], "node-2": [{"n": 1}, {"n": 2}]}
    assert [m.kind for m in cluster.published("node-1", "news")] == ["pubsub"] * 2


def test_debounced_handlers_run_once_at_the_end_of_deliver(cluster):
    a, b = cluster(2)
    calls = []
    b.pubsub_manager.subscribe("ping", calls.append, debounce=60)
    for _n in range(3):
        a.pubsub_manager.publish("ping", {"same": True})
    cluster.deliver()
    assert calls == [{"same": True}]


def test_a_dropped_sync_message_is_replayed_from_the_outbox(cluster, pair):
    """The next message shows the missing number: the receiver reads the lost one
    from the outbox table and handles it first, in order, without a reload."""
    a, b = pair
    a.create_collection("first")
    cluster.deliver()
    cluster.drop_next(b)
    a.create_collection("lost")
    assert cluster.deliver() == []
    assert b.get_collection("lost") is None
    reloads = b.reloads
    a.create_collection("later")
    cluster.deliver()
    assert b.reloads == reloads
    assert set(b.schema) == {"first", "lost", "later"}
    assert [m.payload for m in cluster.dropped(b)] == [{"collection": "lost"}]
    assert b.app.sync_message_manager.gaps == 0
    assert b.app.outbox.replays == 1


def test_drop_next_can_target_one_channel(cluster, pair):
    a, b = pair
    b.app.pubsub_manager.subscribe("news", lambda m: None)
    cluster.drop_next("node-2", 1, channel="news")
    a.create_collection("orders")
    a.app.pubsub_manager.publish("news", {"n": 1})
    cluster.deliver()
    assert b.get_collection("orders")
    assert [m.channel for m in cluster.dropped("node-2")] == ["news"]


def test_a_handler_that_raises_fails_deliver_with_its_traceback(cluster):
    a, b = cluster(2, settings={"PLUGINS": []})

    def broken(message):
        raise KeyError("no such thing")

    b.pubsub_manager.subscribe("news", broken)
    a.pubsub_manager.publish("news", {"n": 1})
    with pytest.raises(AssertionError) as failure:
        cluster.deliver()
    text = str(failure.value)
    assert "1 handler(s) raised" in text
    assert "channel news (node node-2" in text and "KeyError: 'no such thing'" in text
    a.pubsub_manager.publish("news", {"n": 2})
    assert len(cluster.deliver(raise_errors=False)) == 1


def test_assertion_failures_say_which_node_channel_and_what_arrived(cluster, pair):
    a, _b = pair
    a.create_collection("orders")
    with pytest.raises(AssertionError) as failure:
        cluster.assert_delivered("node-2", "plugin:data_source")
    assert "node-2 received no message on 'plugin:data_source'" in str(failure.value)
    assert "not delivered yet (1; call cluster.deliver())" in str(failure.value)
    with pytest.raises(
        AssertionError,
        match=r"the nodes disagree:\n  node-1: .*orders.*\n  node-2: \{\}\n1 message",
    ):
        cluster.assert_same(lambda node: node.plugins["data_source"].schema)
    with pytest.raises(
        AssertionError, match="node-2 sent no message on 'x'; it sent 0:\n  nothing"
    ):
        cluster.assert_published("node-2", "x")
    with pytest.raises(
        AssertionError,
        match="payload \\{'collection': 'users'\\}; it sent 1:\n  sync 'plugin:data_source' from node-1 #1",
    ):
        cluster.assert_published(
            "node-1", "plugin:data_source", {"collection": "users"}
        )
    cluster.deliver()
    cluster.assert_idle()
    Collection.objects.all().delete()


def test_handlers_that_answer_each_other_forever_are_stopped(cluster, monkeypatch):
    from mega_cluster.testing import wire

    monkeypatch.setattr(wire, "MAX_DELIVERIES", 50)
    a, b = cluster(2, settings={"PLUGINS": []})
    for node in (a, b):
        node.pubsub_manager.subscribe(
            "ball", lambda m, node=node: node.pubsub_manager.publish("ball", m)
        )
    a.pubsub_manager.publish("ball", {})
    with pytest.raises(AssertionError, match="answer each other forever"):
        cluster.deliver()


@pytest.mark.redis
def test_on_a_real_pubsub_backend_messages_travel_through_the_server(
    cluster, redis_url
):
    """With Redis pub/sub asked for, deliver() waits for the messages to come
    back from the server, then runs the handlers as on memory."""
    cluster.configure(
        plugins=["data_source"],
        settings={"PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": redis_url}}},
    )
    a, _ = cluster(2)
    assert a.pubsub_manager.backend.__class__.__name__ == "RedisPubSubBackend"
    pa, pb = cluster.plugins("data_source")
    for n in range(5):
        pa.create_collection(f"c{n}")
    delivered = cluster.deliver()
    assert [m.payload["collection"] for _, m in delivered] == [
        f"c{n}" for n in range(5)
    ]
    cluster.assert_same(lambda node: node.plugins["data_source"].schema)
    assert set(pb.schema) == {f"c{n}" for n in range(5)}
