"""Sync-message input: refused at the call (inside ``atomic`` too, never lost after
commit), a refused message uses no sequence number, and a malformed incoming one
never poisons later messages of its sender."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from django.db import connections, transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mega_cluster.exceptions import InvalidName, MessageEncodeError
from mega_cluster.sync_messages.manager import WIRE_PREFIX
from mega_cluster.testing import make_app
from tests.pubsub.helpers import Recorder, pubsub_settings, wait_for
from tests.pubsub.test_input import payloads_of, warm_up

pytestmark = pytest.mark.django_db(transaction=True)

KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("nats", id="nats", marks=pytest.mark.nats),
]
PROPERTY = hsettings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@pytest.fixture(params=KINDS)
def pair(request, unique_name):
    """Nodes ``a`` (sends) and ``b`` (receives, with gaps recorded) on one backend."""
    kind = request.param
    a, b = (
        make_app(
            unique_name,
            {"PUBSUB": pubsub_settings(kind)},
            node_id=f"{unique_name}-{node}",
        )
        for node in ("a", "b")
    )
    a.start()
    b.start()
    received, gaps = Recorder("received"), Recorder("gaps")
    b.sync_message_manager.subscribe("state", received, on_gap=lambda: gaps("gap"))
    warm_up(
        lambda m: a.sync_message_manager.publish("state", m, transaction=False),
        received,
    )
    received.items.clear()
    yield kind, a, b, received, gaps
    a.stop()
    b.stop()


def test_bad_names_fail_on_every_call(pair):
    _kind, a, _b, _received, _gaps = pair
    sync = a.sync_message_manager
    for bad in ("x\n", "a" * 200 + "\n"):
        with pytest.raises(InvalidName, match="trailing newline"):
            sync.publish(bad, 1)
        with pytest.raises(InvalidName):
            sync.subscribe(bad, print)
        with pytest.raises(InvalidName):
            sync.unsubscribe(bad, print)
        with pytest.raises(InvalidName):
            asyncio.run(sync.apublish(bad, 1))


@pytest.mark.parametrize(
    "payload",
    ["\ud800", {"k": math.nan}, [math.inf]],
    ids=["surrogate", "nan", "inf"],
)
def test_a_bad_payload_inside_atomic_fails_at_the_publish_call(pair, payload):
    """A lone surrogate used to be accepted inside atomic() and lost after commit
    without telling the caller. Now the publish call raises, nothing is left
    pending, and the receiver sees no gap."""
    _kind, a, _b, received, gaps = pair
    with transaction.atomic():
        with pytest.raises(MessageEncodeError):
            a.sync_message_manager.publish("state", payload)
        assert connections["default"].run_on_commit == []
    with pytest.raises(MessageEncodeError):
        a.sync_message_manager.publish("state", payload, transaction=False)
    a.sync_message_manager.publish("state", "next", transaction=False)
    assert received.wait(1) == ["next"]
    a.sync_message_manager.publish("state", "again", transaction=False)
    assert received.wait(2) == ["next", "again"]
    assert gaps.items == [] and _b_gaps(pair) == 0


def _b_gaps(pair) -> int:
    return pair[2].sync_message_manager.gaps


def test_a_refused_publish_makes_no_gap_on_other_nodes(pair):
    """A refused message used a sequence number up, so every other node ran a
    needless handle_sync_gap. On NATS a payload of exactly 1 MiB is refused at the
    call (the envelope makes it bigger than the server's max_payload); it used to
    be accepted and never delivered."""
    kind, a, b, received, gaps = pair
    a.sync_message_manager.publish("state", 1, transaction=False)
    assert received.wait(1) == [1]
    refused = ["\udfff"]
    if kind == "nats":
        limit = a.pubsub_manager.backend.max_frame_bytes()
        assert limit == 1024 * 1024  # read from the server's INFO
        refused.append("x" * (limit - 2))  # exactly 1 MiB as JSON
    for payload in refused:
        with pytest.raises(MessageEncodeError):
            a.sync_message_manager.publish("state", payload, transaction=False)
        with transaction.atomic():
            with pytest.raises(MessageEncodeError):
                a.sync_message_manager.publish("state", payload)
        with pytest.raises(MessageEncodeError):
            a.pubsub_manager.publish("news", payload)
    a.sync_message_manager.publish("state", 2, transaction=False)
    assert received.wait(2) == [1, 2]
    assert gaps.items == [] and b.sync_message_manager.gaps == 0


def test_a_non_integer_sequence_number_does_not_poison_its_sender(pair):
    """One message whose seq is not an int made the receiver drop every later
    message of that sender. It is now counted as malformed and skipped."""
    _kind, a, b, received, _gaps = pair
    wire = b.pubsub_manager.backend.wire_channel(WIRE_PREFIX + "state")
    bad = {
        "v": 1,
        "id": "bad",
        "app": a.name,
        "node": a.node_id,
        "ch": WIRE_PREFIX + "state",
        "seq": "7",
        "ts": 1.0,
        "to": "others",
        "p": "poison",
    }
    for seq in ("7", 2.5, None, -1):
        data = json.dumps({**bad, "seq": seq}).encode()
        _raw_publish(a, wire, data)
    for n in range(3):
        a.sync_message_manager.publish("state", n, transaction=False)
    assert received.wait(3) == [0, 1, 2]
    assert wait_for(lambda: b.pubsub_manager.rejected == 4)


def _raw_publish(app, wire: str, data: bytes) -> None:
    """Hand raw bytes to the app's own backend connection, like a buggy peer."""
    from mega_cluster.pubsub import runtime

    manager = app.pubsub_manager
    runtime.run_sync(manager._loop, manager.backend.publish(wire, data), 10)


@pytest.mark.timeout(300)
@PROPERTY
@given(
    channel=st.one_of(
        st.from_regex(r"[A-Za-z0-9_.:\-]{1,200}", fullmatch=True),
        st.text(st.characters(codec=None, categories=None), max_size=20),
    ),
    payload=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats()
        | st.text(st.characters(codec=None, categories=None), max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    ),
)
def test_any_sync_message_round_trips_or_fails_at_the_call(pair, channel, payload):
    """Property: published after commit and received unchanged by the other node,
    or refused at the call; the receiver never sees a gap."""
    _kind, a, b, _received, gaps = pair
    seen = Recorder()
    try:
        stop = b.sync_message_manager.subscribe(channel, seen)
    except InvalidName:
        stop = None
    else:
        warm_up(
            lambda m: a.sync_message_manager.publish(channel, m, transaction=False),
            seen,
        )
    try:
        with transaction.atomic():
            a.sync_message_manager.publish(channel, payload)
    except (InvalidName, MessageEncodeError):
        pass
    else:
        assert stop is not None
        assert wait_for(lambda: payloads_of(seen), timeout=10)
        assert payloads_of(seen) == [payload]
    if stop is not None:
        stop()
    assert gaps.items == []
