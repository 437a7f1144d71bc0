"""PubSubManager behaviour that does not depend on the backend (memory backend)."""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import threading
import time
import uuid

import pytest

from mega_cluster import metrics
from mega_cluster.exceptions import InvalidName, MessageEncodeError
from mega_cluster.pubsub import envelope
from mega_cluster.testing import make_app

from .helpers import Recorder, wait_for


@pytest.fixture
def nodes(unique_name):
    apps = []

    def factory(node_id, **pubsub):
        settings = {"PUBSUB": {"BACKEND": "memory", **pubsub}}
        max_bytes = pubsub.pop("MESSAGE_MAX_BYTES", None)
        if max_bytes is not None:
            settings = {"PUBSUB": {"BACKEND": "memory", **pubsub}}
            settings["MESSAGE_MAX_BYTES"] = max_bytes
        app = make_app(unique_name, settings, node_id=f"{unique_name}-{node_id}")
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.stop()


@pytest.mark.parametrize("channel", ["", "a b", "x" * 201, "é", "a/b", "~internal", 5])
def test_invalid_channel_names_are_rejected(nodes, channel):
    """Bad channel names raise InvalidName (a ValueError) naming the rule."""
    manager = nodes("a").pubsub_manager
    with pytest.raises(InvalidName) as exc:
        manager.publish(channel, 1)
    assert isinstance(exc.value, ValueError)
    with pytest.raises(ValueError, match="channel name"):
        manager.subscribe(channel, print)


def test_valid_channel_characters(nodes):
    """Letters, digits and _ . : - up to 200 characters are accepted."""
    a, b = nodes("a"), nodes("b")
    seen = Recorder()
    channel = "Ab9_.:-" + "x" * 193
    b.pubsub_manager.subscribe(channel, seen)
    a.pubsub_manager.publish(channel, 1)
    assert seen.wait(1) == [1]


def test_not_serialisable_payload_raises_and_sends_nothing(nodes):
    """A payload JSON cannot encode raises MessageEncodeError; nothing is sent."""
    a, b = nodes("a"), nodes("b")
    seen = Recorder()
    b.pubsub_manager.subscribe("news", seen)
    with pytest.raises(MessageEncodeError, match="not JSON-serialisable"):
        a.pubsub_manager.publish("news", {"obj": object()})
    with pytest.raises(MessageEncodeError):
        a.pubsub_manager.publish("news", {1, 2})
    a.pubsub_manager.publish("news", "sentinel")
    assert seen.wait(1) == ["sentinel"]


def test_oversized_payload_raises_and_sends_nothing(unique_name):
    """A payload over MESSAGE_MAX_BYTES raises MessageEncodeError naming the limit."""
    a = make_app(
        unique_name,
        {"PUBSUB": {"BACKEND": "memory"}, "MESSAGE_MAX_BYTES": 100},
        node_id=f"{unique_name}-a",
    )
    b = make_app(unique_name, {"PUBSUB": {"BACKEND": "memory"}}, node_id="b")
    try:
        seen = Recorder()
        b.pubsub_manager.subscribe("news", seen)
        with pytest.raises(MessageEncodeError, match="100-byte limit"):
            a.pubsub_manager.publish("news", "x" * 200)
        a.pubsub_manager.publish("news", "x" * 50)
        assert seen.wait(1) == ["x" * 50]
    finally:
        a.stop()
        b.stop()


def test_django_types_are_encoded(nodes):
    """Dates, decimals and UUIDs go out through DjangoJSONEncoder (as strings)."""
    a, b = nodes("a"), nodes("b")
    seen = Recorder()
    b.pubsub_manager.subscribe("news", seen)
    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    ident = uuid.UUID(int=1)
    a.pubsub_manager.publish(
        "news", {"when": when, "d": decimal.Decimal("1.5"), "u": ident}
    )
    assert seen.wait(1) == [
        {"when": "2024-01-02T03:04:05Z", "d": "1.5", "u": str(ident)}
    ]


def test_bad_subscribe_arguments(nodes):
    """Non-callable handlers and negative debounce are rejected at the call."""
    manager = nodes("a").pubsub_manager
    with pytest.raises(TypeError, match="handler must be callable"):
        manager.subscribe("news", "not callable")
    with pytest.raises(ValueError, match="debounce must be >= 0"):
        manager.subscribe("news", print, debounce=-1)
    with pytest.raises(TypeError, match="debounce_key must be callable"):
        manager.subscribe("news", print, debounce=1, debounce_key="id")
    with pytest.raises(ValueError, match="max_wait must be >= debounce"):
        manager.subscribe("news", print, debounce=1, max_wait=0.5)
    with pytest.raises(ValueError, match="max_wait must be a finite number"):
        manager.subscribe("news", print, debounce=1, max_wait=float("nan"))
    with pytest.raises(TypeError, match="max_wait must be a number"):
        manager.subscribe("news", print, debounce=1, max_wait="1")


def test_envelope_fields():
    """The wire envelope carries version, id, app, node, channel, seq, time, payload."""
    data = envelope.build(
        app="main",
        node="n1",
        channel="c",
        seq=7,
        to=envelope.TO_ALL,
        payload_json='{"a":1}',
    )
    raw = json.loads(data)
    assert set(raw) == {"v", "id", "app", "node", "ch", "seq", "ts", "to", "p"}
    env = envelope.decode(data)
    assert (env.version, env.app, env.node, env.channel, env.seq, env.payload) == (
        1,
        "main",
        "n1",
        "c",
        7,
        {"a": 1},
    )
    assert abs(env.timestamp - time.time()) < 5
    assert len(env.id) == 32
    with pytest.raises(ValueError):
        envelope.decode(b'{"v": 99}')


def test_sequence_numbers_per_channel(nodes):
    """Each publisher numbers its messages per channel from 1."""
    from mega_cluster.pubsub.manager import Subscription

    a, b = nodes("a"), nodes("b")
    seen = Recorder()
    b.pubsub_manager.subscribe_internal(Subscription("x", seen, raw=True))
    b.pubsub_manager.subscribe_internal(Subscription("y", seen, raw=True))
    for channel in ["x", "x", "y", "x"]:
        a.pubsub_manager.publish(channel, 0)
    got = seen.wait(4)
    assert [(e.channel, e.seq) for e in got] == [("x", 1), ("x", 2), ("y", 1), ("x", 3)]
    assert {e.node for e in got} == {a.node_id}


def test_buffer_overflow_is_counted_logged_and_reported(nodes, caplog):
    """A full local buffer drops new messages, counts and logs them, calls on_gap."""
    a, b = nodes("a"), nodes("b", BUFFER_SIZE=3)
    release = threading.Event()
    seen, gaps = Recorder(), Recorder("gaps")

    def slow(payload):
        release.wait(5)
        seen(payload)

    b.pubsub_manager.subscribe("news", slow, on_gap=lambda: gaps("gap"))
    with caplog.at_level(logging.WARNING, logger="mega_cluster.pubsub"):
        for i in range(20):
            a.pubsub_manager.publish("news", i)
        release.set()
        assert gaps.wait(1) == ["gap"]
    manager = b.pubsub_manager
    assert manager.dropped == 20 - len(seen.wait(20 - manager.dropped))
    assert 0 < manager.dropped < 20
    assert any("buffer" in r.getMessage() for r in caplog.records)
    assert seen.items == sorted(seen.items)


def test_pending_debounce_is_cancelled_on_stop(nodes):
    """Stopping a node cancels its pending debounced calls: none is left, and a
    dispatcher running again (the manager restarted) never fires the old one."""
    a, b = nodes("a"), nodes("b")
    debounced, direct = Recorder("debounced"), Recorder("direct")
    manager = b.pubsub_manager
    manager.subscribe("news", debounced, debounce=0.3)
    manager.subscribe("news", direct)
    a.pubsub_manager.publish("news", 1)
    assert direct.wait(1) == [1]
    assert wait_for(lambda: len(manager._pending) == 1)
    manager.stop()
    assert manager._pending == {}
    # the subscription survives a restart; a timer that survived the stop would
    # fire on the new dispatcher thread once its deadline passed
    manager.start()
    assert manager._dispatcher is not None and manager._dispatcher.is_alive()
    time.sleep(0.6)
    assert debounced.items == []
    a.pubsub_manager.publish("news", 2)
    assert debounced.wait(1, timeout=3) == [2]


def test_handler_may_unsubscribe_and_stop_inside_dispatch(nodes):
    """A handler can unsubscribe itself without deadlocking the listener."""
    a, b = nodes("a"), nodes("b")
    seen = Recorder()

    def once(payload):
        seen(payload)
        b.pubsub_manager.unsubscribe("news", once)

    b.pubsub_manager.subscribe("news", once)
    a.pubsub_manager.publish("news", 1)
    a.pubsub_manager.publish("news", 2)
    assert wait_for(lambda: seen.items == [1])
    time.sleep(0.2)
    assert seen.items == [1]


@pytest.mark.django_db(transaction=True)
def test_handler_database_connections_are_closed_after_it(nodes):
    """Handlers run between close_old_connections() calls: with CONN_MAX_AGE=0 the
    connection a handler opened is closed once it returns."""
    from django.db import connections

    assert connections["default"].settings_dict["CONN_MAX_AGE"] == 0
    a, b = nodes("a"), nodes("b")
    used = []

    def handler(payload):
        wrapper = connections["default"]  # this thread's own connection
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone()[0] == 1
        assert wrapper.connection is not None
        used.append(wrapper)

    b.pubsub_manager.subscribe("news", handler)
    a.pubsub_manager.publish("news", 1)
    assert wait_for(lambda: used and used[0].connection is None)


@pytest.mark.skipif(not metrics.ENABLED, reason="prometheus-client is not installed")
def test_published_counts_reach_the_metric_without_stop(nodes, unique_name):
    """Published messages are counted in batches, yet reach the metric within
    about PUBLISHED_FLUSH seconds while the node keeps running."""
    a = nodes("a")
    for n in range(5):
        a.pubsub_manager.publish("counted", n)
    labels = {"app": unique_name, "channel": "counted"}

    def total():
        return metrics.REGISTRY.get_sample_value(
            "mega_cluster_messages_published_total", labels
        )

    assert wait_for(lambda: total() == 5, timeout=5)
