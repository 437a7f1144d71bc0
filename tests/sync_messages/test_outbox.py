"""The outbox of sync messages in one process: the row in the caller's
transaction, the sent mark, the relay, the high-water mark, duplicates, a named
receiver that resumes after a restart, and the settings."""

from __future__ import annotations

import pytest
from django.db import transaction

from mega_cluster.exceptions import ConfigurationError
from mega_cluster.models import OutboxMessage, SyncSequence
from mega_cluster.outbox import store
from mega_cluster.testing import make_app
from tests.databases import ON_POSTGRES
from tests.pubsub.helpers import Recorder, wait_for

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "postgres"])

DATABASES = [
    pytest.param("default", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=ON_POSTGRES),
]

FAST = {
    "RELAY_AFTER": 0.2,
    "RELAY_INTERVAL": 0.05,
    "HIGH_WATER_EVERY": 0.1,
}


@pytest.fixture(params=DATABASES)
def alias(request):
    return request.param


@pytest.fixture
def start_node(unique_name):
    started = []

    def start(suffix, outbox=None, channel="state"):
        app = make_app(
            unique_name, {"OUTBOX": outbox or {}}, node_id=f"{unique_name}-{suffix}"
        )
        received, gaps = Recorder(f"received-{suffix}"), Recorder(f"gaps-{suffix}")
        app.sync_message_manager.subscribe(
            channel, received, on_gap=lambda: gaps("gap")
        )
        app.start()
        started.append(app)
        return app, received, gaps

    yield start
    for app in started:
        app.stop()


def _rows(alias, app, channel="state"):
    return list(
        OutboxMessage.objects.using(alias)
        .filter(app_name=app.name, channel=channel)
        .order_by("seq")
        .values_list("seq", "sent_at")
    )


def test_the_row_is_written_in_the_transaction_and_marked_sent(alias, start_node):
    """Inside atomic() the row and its number exist in the transaction only; after
    commit the message arrives and the row is marked sent."""
    a, _, _ = start_node("a")
    _b, received, _ = start_node("b")
    with transaction.atomic(using=alias):
        a.sync_message_manager.publish("state", {"v": 1}, transaction=alias)
        assert [seq for seq, _ in _rows(alias, a)] == [1]
        assert received.items == []
    assert wait_for(lambda: received.items == [{"v": 1}])
    assert wait_for(lambda: _rows(alias, a)[0][1] is not None)


def test_a_rollback_leaves_no_row_and_gives_the_number_back(alias, start_node):
    a, _, _ = start_node("a")
    _b, received, gaps = start_node("b")
    with pytest.raises(RuntimeError), transaction.atomic(using=alias):
        a.sync_message_manager.publish("state", "lost", transaction=alias)
        raise RuntimeError("rollback")
    assert _rows(alias, a) == []
    assert not SyncSequence.objects.using(alias).filter(app_name=a.name).exists()
    with transaction.atomic(using=alias):
        a.sync_message_manager.publish("state", "kept", transaction=alias)
    assert wait_for(lambda: received.items == ["kept"])
    assert [seq for seq, _ in _rows(alias, a)] == [1]
    assert gaps.items == []


def test_the_relay_sends_what_a_dead_sender_left(alias, start_node):
    """A committed row nobody sent (its sender died after commit) is sent by the
    relay of a live node once RELAY_AFTER passed: it arrives once, the row is
    marked sent."""
    a, _, _ = start_node("a", {**FAST, "HIGH_WATER_EVERY": None})
    _b, received, gaps = start_node("b", {**FAST, "HIGH_WATER_EVERY": None})
    with transaction.atomic(using=alias):
        a.outbox.write_sync(alias, "state", '{"orphan":true}')
    a.outbox.aliases.add(alias)
    assert wait_for(lambda: received.items == [{"orphan": True}], 10)
    assert wait_for(lambda: _rows(alias, a)[0][1] is not None)
    assert a.outbox.relayed + _b.outbox.relayed >= 1
    assert received.items == [{"orphan": True}] and gaps.items == []


def test_the_high_water_mark_finds_a_lost_last_message(alias, start_node):
    """No later message shows the gap: the periodic high-water mark does, and the
    receiver replays the message from the table (no relay needed)."""
    quiet = {"RELAY_AFTER": 3600, "HIGH_WATER_EVERY": 0.1}
    a, _, _ = start_node("a", quiet)
    b, received, gaps = start_node("b", quiet)
    a.sync_message_manager.publish("state", 1, transaction=alias)
    assert wait_for(lambda: received.items == [1])
    with transaction.atomic(using=alias):
        a.outbox.write_sync(alias, "state", "2")  # committed, never sent
    assert wait_for(lambda: received.items == [1, 2], 10)
    assert b.outbox.replays == 1 and gaps.items == []


def test_a_message_sent_twice_is_handled_once(alias, start_node):
    a, _, _ = start_node("a")
    b, received, _ = start_node("b")
    a.sync_message_manager.publish("state", "once", transaction=alias)
    assert wait_for(lambda: received.items == ["once"])
    (row,) = store.sync_range(alias, a.name, "state", 0, 1)
    a.sync_message_manager.relay(alias, row)  # a relay that sends it again
    a.sync_message_manager.publish("state", "next", transaction=alias)
    assert wait_for(lambda: received.items == ["once", "next"])
    assert b.outbox.duplicates == 1


def test_transaction_false_has_no_row_and_no_number(start_node):
    a, _, _ = start_node("a")
    _b, received, _ = start_node("b")
    with transaction.atomic():
        a.sync_message_manager.publish("state", "now", transaction=False)
        assert received.wait_for_item("now") == ["now"]
    assert _rows("default", a) == []


def test_a_named_receiver_replays_what_it_missed_while_stopped(start_node):
    """OUTBOX["RECEIVER"] keeps a node's position in the database: restarted
    under the same name it replays the messages sent while it was down, in
    order, and calls no gap hook."""
    a, _, _ = start_node("a")
    named = {"RECEIVER": "web-1", "HIGH_WATER_EVERY": 0.1}
    b, received, _ = start_node("b1", named)
    a.sync_message_manager.publish("state", 1)
    assert wait_for(lambda: received.items == [1])
    b.stop()
    for n in range(2, 6):
        a.sync_message_manager.publish("state", n)
    _b2, again, gaps = start_node("b2", named)
    assert wait_for(lambda: again.items == [2, 3, 4, 5], 10)
    a.sync_message_manager.publish("state", 6)
    assert wait_for(lambda: again.items == [2, 3, 4, 5, 6])
    assert gaps.items == []


def test_an_unnamed_receiver_starts_where_the_database_stands(start_node):
    a, _, _ = start_node("a")
    a.sync_message_manager.publish("state", 1)
    _b, received, gaps = start_node("b")
    a.sync_message_manager.publish("state", 2)
    assert wait_for(lambda: received.items == [2])
    assert gaps.items == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("RETENTION", 0),
        ("RETENTION", "1d"),
        ("RELAY_AFTER", -1),
        ("HIGH_WATER_EVERY", 0),
        ("RECEIVER", ""),
        ("RECEIVER", 7),
        ("RELAY_BATCH", 0),
    ],
)
def test_bad_outbox_settings_name_the_key(key, value):
    with pytest.raises(ConfigurationError, match=f"OUTBOX {key}"):
        make_app("bad", {"OUTBOX": {key: value}})


def test_a_stopping_outbox_thread_can_use_the_app_and_stop_does_not_hang(start_node):
    """The outbox thread's last round (the receiver's cursor save, a replay) runs
    while app.stop() holds the app and waits for the thread: the outbox must still
    be there for it (it was dropped before its stop, so the thread waited for the
    app's lock until the join gave up after 10 s, then built a second outbox in the
    stopped app), and nothing new is built meanwhile."""
    import threading
    import time

    app, _, _ = start_node("a", FAST)
    outbox = app.outbox
    stopping, seen = threading.Event(), []

    def tick():
        if stopping.is_set():
            box = app.outbox
            try:
                registry = app.node_registry  # stopped before the outbox
            except Exception as exc:
                registry = exc
            seen.append((box, registry))

    outbox.add_ticker(tick)
    stopping.set()
    began = time.monotonic()
    stopper = threading.Thread(target=app.stop)
    stopper.start()
    stopper.join(timeout=30)
    assert not stopper.is_alive(), "app.stop() hangs"
    assert time.monotonic() - began < 8, "app.stop() waited out the join"
    last_box, last_registry = seen[-1]  # the round run by stop() itself
    assert last_box is outbox, seen
    assert "is stopping: no node_registry" in str(last_registry), seen
    assert app.built_components() == {}
