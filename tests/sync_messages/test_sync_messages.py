"""SyncMessageManager: after-commit sending on SQLite and PostgreSQL, skip-self,
sequence gaps."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.db import connections, transaction

from mega_cluster.exceptions import InvalidName, MessageEncodeError
from mega_cluster.testing import make_app
from tests.pubsub.helpers import Recorder

DATABASES = [
    pytest.param("default", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "postgres"])


@pytest.fixture(params=DATABASES)
def alias(request):
    """The database whose transactions the messages follow."""
    return request.param


@pytest.fixture
def nodes(unique_name):
    """Two nodes of one app on the memory backend: ``a`` sends, ``b`` receives."""
    a = make_app(unique_name, {}, node_id=f"{unique_name}-a")
    b = make_app(unique_name, {}, node_id=f"{unique_name}-b")
    received, sentinel = Recorder("received"), Recorder("sentinel")
    b.sync_message_manager.subscribe("state", received)
    b.sync_message_manager.subscribe("sentinel", sentinel)

    def sync_point(n=1):
        """Wait until every message a sent before is handled on b."""
        a.sync_message_manager.publish("sentinel", "s", transaction=False)
        sentinel.wait(n)

    yield a, b, received, sync_point
    a.stop()
    b.stop()


def _atomic(alias):
    return transaction.atomic(using=alias)


def test_commit_sends_exactly_once(alias, nodes):
    """A message published inside atomic() is sent once, when the block commits."""
    a, _b, received, sync_point = nodes
    with _atomic(alias):
        a.sync_message_manager.publish("state", {"v": 1}, transaction=alias)
        sync_point(1)
        assert received.items == []
    sync_point(2)
    assert received.items == [{"v": 1}]


def test_rollback_sends_nothing_and_leaves_nothing_pending(alias, nodes):
    """A rolled-back block sends nothing, neither at the rollback nor with a later
    commit on the same connection: only the later block's message arrives."""
    a, b, received, sync_point = nodes
    with pytest.raises(RuntimeError), _atomic(alias):
        a.sync_message_manager.publish("state", "lost", transaction=alias)
        raise RuntimeError("rollback")
    sync_point(1)
    assert received.items == []
    with _atomic(alias):
        a.sync_message_manager.publish("state", "later", transaction=alias)
    sync_point(2)
    assert received.items == ["later"]
    # nor with the sequence: the receiver saw no gap
    assert b.sync_message_manager.gaps == 0


def test_rolled_back_savepoint_drops_only_its_messages(alias, nodes):
    """Messages from a rolled-back nested block are dropped, the others sent."""
    a, _b, received, sync_point = nodes
    with _atomic(alias):
        a.sync_message_manager.publish("state", "outer", transaction=alias)
        with pytest.raises(RuntimeError), _atomic(alias):
            a.sync_message_manager.publish("state", "inner", transaction=alias)
            raise RuntimeError("rollback savepoint")
        with _atomic(alias):
            a.sync_message_manager.publish("state", "kept inner", transaction=alias)
    sync_point(1)
    assert received.items == ["outer", "kept inner"]


def test_outside_a_transaction_sends_now(alias, nodes):
    """Outside atomic() the message goes out immediately."""
    a, _b, received, _sync_point = nodes
    a.sync_message_manager.publish("state", "now", transaction=alias)
    assert received.wait(1) == ["now"]


def test_transaction_false_sends_now_inside_atomic(alias, nodes):
    """transaction=False sends at once even inside a block (and on rollback)."""
    a, _b, received, sync_point = nodes
    with pytest.raises(RuntimeError), _atomic(alias):
        a.sync_message_manager.publish("state", "forced", transaction=False)
        assert received.wait(1) == ["forced"]
        raise RuntimeError("rollback")
    sync_point(1)
    assert received.items == ["forced"]


@pytest.mark.postgres
def test_the_alias_picks_the_database(nodes):
    """transaction="postgres" follows that database; a block on the default
    database does not hold the message back, and vice versa."""
    a, _b, received, _sync_point = nodes
    with transaction.atomic(using="postgres"):
        a.sync_message_manager.publish("state", "default-db")  # default not atomic
        a.sync_message_manager.publish("state", "pg", transaction="postgres")
        assert received.wait(1) == ["default-db"]
    assert received.wait(2) == ["default-db", "pg"]


def test_self_is_skipped(nodes):
    """The sending node's own receivers never get its sync messages."""
    a, _b, received, sync_point = nodes
    mine = Recorder("mine")
    a.sync_message_manager.subscribe("state", mine)
    a.sync_message_manager.publish("state", 1)
    assert received.wait(1) == [1]
    sync_point(1)
    assert mine.items == []


def test_bad_input_raises_at_the_call(nodes):
    """Bad channel, payload or transaction argument raise before anything is sent."""
    a, _b, received, sync_point = nodes
    with pytest.raises(InvalidName):
        a.sync_message_manager.publish("bad name", 1)
    with pytest.raises(MessageEncodeError):
        a.sync_message_manager.publish("state", object())
    with pytest.raises(ValueError, match="not a DATABASES alias"):
        a.sync_message_manager.publish("state", 1, transaction="nope")
    with pytest.raises(TypeError, match="transaction must be"):
        a.sync_message_manager.publish("state", 1, transaction=3)
    with _atomic("default"):
        with pytest.raises(MessageEncodeError):
            a.sync_message_manager.publish("state", {1, 2})
        assert connections["default"].run_on_commit == []
    sync_point(1)
    assert received.items == []


def test_a_number_missed_on_the_wire_is_replayed_before_the_next(nodes):
    """A message committed but never sent (its sender died) is read from the
    outbox when the next number arrives, handled first, and no gap is called."""
    a, b, _received, sync_point = nodes
    events = []
    b.sync_message_manager.subscribe(
        "gappy",
        lambda m: events.append(("msg", m)),
        on_gap=lambda: events.append("gap"),
    )
    a.sync_message_manager.publish("gappy", 1)
    with transaction.atomic():  # committed, numbered, never sent
        a.outbox.write_sync("default", "gappy", "2")
    a.sync_message_manager.publish("gappy", 3)
    a.sync_message_manager.publish("gappy", 4)
    sync_point(1)
    assert events == [("msg", 1), ("msg", 2), ("msg", 3), ("msg", 4)]
    assert b.sync_message_manager.gaps == 0
    assert b.outbox.replays == 1


def test_unsubscribe(nodes):
    """An unsubscribed handler gets no more sync messages."""
    a, b, received, sync_point = nodes
    other = Recorder("other")
    stop = b.sync_message_manager.subscribe("state", other)
    a.sync_message_manager.publish("state", 1)
    other.wait(1)
    assert stop() is True
    assert b.sync_message_manager.unsubscribe("state", received) is True
    assert b.sync_message_manager.unsubscribe("state", received) is False
    a.sync_message_manager.publish("state", 2)
    sync_point(1)
    assert other.items == [1]
    assert received.items == [1]


def test_async_twins(nodes):
    """apublish/asubscribe/aunsubscribe behave like the sync methods."""
    a, b, _received, sync_point = nodes
    seen = Recorder("seen")

    async def scenario():
        await b.sync_message_manager.asubscribe("async", seen)
        await a.sync_message_manager.apublish("async", "hello")
        seen.wait(1)
        assert await b.sync_message_manager.aunsubscribe("async", seen) is True
        await a.sync_message_manager.apublish("async", "gone")

    async_to_sync(scenario)()
    sync_point(1)
    assert seen.items == ["hello"]
