"""Pub/sub input, both ways: bad names, numbers and payloads fail at the call on
every backend; malformed frames on the Redis and NATS wire are counted, logged
and skipped, and never stop later messages."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mega_cluster import metrics
from mega_cluster.exceptions import (
    ArgumentTypeError,
    InvalidArgument,
    InvalidName,
    MessageEncodeError,
)
from mega_cluster.pubsub.dispatch import Subscription
from mega_cluster.testing import make_app
from tests.servers import nats_server

from .helpers import Recorder, pubsub_settings, wait_for

DOCUMENTED = (InvalidName, InvalidArgument, ArgumentTypeError, MessageEncodeError)
PROPERTY = hsettings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
names = st.one_of(
    st.text(st.characters(codec=None, categories=None), max_size=30),
    st.from_regex(r"[A-Za-z0-9_.:\-]{1,200}", fullmatch=True),
    st.sampled_from(["x\n", "a" * 200 + "\n", "a" * 201, "ok.name:1-2_3"]),
)
payloads = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats()  # NaN and infinities included: refused at the call
    | st.text(st.characters(codec=None, categories=None), max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


def deep(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def rejected_metric(app_name: str) -> float:
    if not metrics.ENABLED:
        return 0.0
    value = metrics.REGISTRY.get_sample_value(
        "mega_cluster_messages_rejected_total", {"app": app_name}
    )
    return value or 0.0


def test_names_with_a_trailing_newline_fail_on_every_call(make_node):
    """``$`` let "x\\n" through; on NATS one publish then reset the connection."""
    a = make_node("a")
    manager = a.pubsub_manager
    for bad in ("x\n", "a" * 200 + "\n"):
        with pytest.raises(InvalidName, match="trailing newline"):
            manager.publish(bad, 1)
        with pytest.raises(InvalidName):
            manager.subscribe(bad, print)
        with pytest.raises(InvalidName):
            manager.unsubscribe(bad, print)
        with pytest.raises(InvalidName):
            asyncio.run(manager.apublish(bad, 1))
        with pytest.raises(InvalidName):
            asyncio.run(manager.asubscribe(bad, print))
        with pytest.raises(InvalidName):
            asyncio.run(manager.aunsubscribe(bad, print))
    seen = Recorder()
    manager.subscribe("news", seen)
    manager.publish("news", "still fine", only_self=True)
    assert seen.wait(1) == ["still fine"]


@pytest.mark.parametrize(
    "payload",
    [math.nan, {"x": math.inf}, [-math.inf], deep(5000), "\ud800", {"\udc00": 1}],
    ids=["nan", "inf", "-inf", "nested-5000", "surrogate", "surrogate-key"],
)
def test_payloads_that_are_not_strict_json_fail_at_the_call(make_node, payload):
    """NaN/Infinity used to go out as non-JSON, 5,000 levels raised RecursionError
    and a lone surrogate failed only while sending."""
    a, b = make_node("a"), make_node("b")
    seen = Recorder()
    b.pubsub_manager.subscribe("news", seen)
    with pytest.raises(MessageEncodeError):
        a.pubsub_manager.publish("news", payload)
    with pytest.raises(MessageEncodeError):
        asyncio.run(a.pubsub_manager.apublish("news", payload))
    a.pubsub_manager.publish("news", "next")
    assert seen.wait(1) == ["next"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, 1e300, True, "1"])
def test_bad_debounce_fails_at_the_call(make_node, bad):
    manager = make_node("a").pubsub_manager
    with pytest.raises((InvalidArgument, ArgumentTypeError), match="debounce"):
        manager.subscribe("news", print, debounce=bad)
    assert manager.subscriptions() == {}


WARM = {"warm-up": True}


def warm_up(publish, recorder: Recorder) -> None:
    """Publish a marker until one arrives, then forget the markers.

    nats-server 2.9 may route a publish made right after another connection's
    SUB (confirmed by PING/PONG) without that subscription, about once in 150
    re-subscriptions: the properties here test input handling, so they start
    once the subscription is known to be live.
    """
    sent = 0
    while sent < 40:
        publish(WARM)
        sent += 1
        if wait_for(lambda: WARM in recorder.items, timeout=0.25):
            break
    assert WARM in recorder.items, "the subscription never became live"
    # the slow ones too (a lost one only costs this second)
    wait_for(lambda: recorder.items.count(WARM) >= sent, timeout=1)


def payloads_of(recorder: Recorder) -> list:
    return [item for item in recorder.items if item != WARM]


@pytest.fixture
def pair(make_node):
    """Nodes ``a`` and ``b``, built once for all the examples of a property, with
    ``b`` listening on "probe" (to show it still works after each example)."""
    a, b = make_node("a"), make_node("b")
    probe = Recorder("probe")
    b.pubsub_manager.subscribe("probe", probe)
    warm_up(lambda m: a.pubsub_manager.publish("probe", m), probe)
    return a, b, probe


@pytest.mark.timeout(300)
@PROPERTY
@given(channel=names, payload=payloads)
def test_any_channel_and_payload_round_trips_or_fails_at_the_call(
    pair, channel, payload
):
    """Property, on every backend: subscribe + publish either deliver the payload
    unchanged to the other node, or raise a documented error at the call; the
    nodes keep working either way."""
    a, b, probe = pair
    seen = Recorder()
    try:
        stop = b.pubsub_manager.subscribe(channel, seen)
    except DOCUMENTED:
        stop = None
    else:
        warm_up(lambda m: a.pubsub_manager.publish(channel, m), seen)
    try:
        a.pubsub_manager.publish(channel, payload)
    except DOCUMENTED:
        pass
    else:
        assert stop is not None  # the name passed subscribe too
        assert wait_for(lambda: payloads_of(seen), timeout=10)
        assert payloads_of(seen) == [payload]
    if stop is not None:
        stop()
    probe.items.clear()
    a.pubsub_manager.publish("probe", 1)
    assert probe.wait(1, timeout=10) == [1]


# the wire ---------------------------------------------------------------------------

WIRE_KINDS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("nats", marks=pytest.mark.nats),
]


def inject(kind: str, wire: str, frames: list[bytes]) -> None:
    """Publish raw bytes on a wire channel with a plain client, as another
    program would."""
    if kind == "redis":
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        try:
            for frame in frames:
                client.publish(wire, frame)
        finally:
            client.close()
        return

    async def send() -> None:
        import nats

        nc = await nats.connect(settings.NATS_URL)
        try:
            for frame in frames:
                await nc.publish(wire, frame)
            await nc.flush()
        finally:
            await nc.close()

    asyncio.run(send())


def envelope_dict(app: str, node: str, channel: str, **changes) -> dict:
    return {
        "v": 1,
        "id": "x1",
        "app": app,
        "node": node,
        "ch": channel,
        "seq": 1,
        "ts": 1.0,
        "to": "all",
        "p": "payload",
        **changes,
    }


@pytest.fixture
def wire_nodes(unique_name):
    """``build(kind)``: nodes a and b of the test's app on the shared server."""
    apps = []

    def build(kind: str):
        for node in ("a", "b"):
            apps.append(
                make_app(
                    unique_name,
                    {"PUBSUB": pubsub_settings(kind), "MESSAGE_MAX_BYTES": 10_000},
                    node_id=f"{unique_name}-{node}",
                )
            )
        return apps[-2:]

    yield build
    for app in apps:
        app.stop()


@pytest.mark.parametrize("kind", WIRE_KINDS)
def test_malformed_frames_on_the_wire_are_counted_and_skipped(
    kind, wire_nodes, unique_name
):
    """Bad JSON, bad UTF-8, wrong types, a missing field, another app's envelope, a
    huge frame and deep nesting: each counted in ``rejected`` (and the metric),
    logged and skipped; the listener survives and later messages arrive."""
    a, b = wire_nodes(kind)
    seen = Recorder()
    b.pubsub_manager.subscribe("news", seen)
    wire = b.pubsub_manager.backend.wire_channel("news")
    good = envelope_dict(unique_name, "someone", "news")
    frames = [
        b"not json",
        b"\xff\xfe{}",
        b"[]",
        json.dumps({"v": 1}).encode(),
        json.dumps({**good, "seq": "5"}).encode(),
        json.dumps({**good, "seq": True}).encode(),
        json.dumps({**good, "to": "nobody"}).encode(),
        json.dumps({**good, "node": 7}).encode(),
        json.dumps({**good, "p": float("nan")}).encode(),  # NaN: not JSON
        json.dumps({**good, "app": "another-app"}).encode(),
        json.dumps({**good, "p": "x" * (b.pubsub_manager.max_frame + 1)}).encode(),
        b"[" * 50_000,
    ]
    before = rejected_metric(unique_name)
    inject(kind, wire, frames)
    a.pubsub_manager.publish("news", "after")
    assert seen.wait(1, timeout=10) == ["after"]
    assert wait_for(lambda: b.pubsub_manager.rejected == len(frames))
    if metrics.ENABLED:
        assert rejected_metric(unique_name) - before == len(frames)
    inject(kind, wire, [json.dumps(good).encode()])  # a well-formed stranger
    assert seen.wait(2, timeout=10) == ["after", "payload"]


@pytest.mark.nats
def test_a_refused_nats_subscribe_leaves_no_trace(unique_name):
    """A subscribe the server refuses is forgotten: it used to stay recorded, so
    every reconnect replayed it and failed, and pub/sub was dead for good after
    the next broker blip."""
    import nats.errors

    with nats_server(jetstream=False) as server:
        apps = [
            make_app(
                unique_name,
                {
                    "PUBSUB": {
                        "BACKEND": "nats",
                        "OPTIONS": {"URL": f"nats://127.0.0.1:{server.port}"},
                        "RECONNECT_MAX_DELAY": 0.5,
                    }
                },
                node_id=f"{unique_name}-{n}",
            )
            for n in ("a", "b")
        ]
        try:
            a, b = apps
            seen = Recorder()
            b.pubsub_manager.subscribe("news", seen)
            manager = b.pubsub_manager
            # past the name check: what the broker itself refuses
            with pytest.raises(nats.errors.Error):
                manager.subscribe_internal(Subscription("x\n", print))
            assert manager.backend.channels == {manager.backend.wire_channel("news")}
            assert "x\n" not in manager._subs

            server.restart()
            assert wait_for(lambda: manager.backend.reconnects == 1, timeout=20)

            def delivered() -> bool:
                try:
                    a.pubsub_manager.publish("news", "after")
                except Exception:
                    return False
                return bool(seen.wait(1, timeout=0.5))

            assert wait_for(delivered, timeout=20)
        finally:
            for app in apps:
                app.stop()


@pytest.mark.redis
def test_malformed_channel_layer_messages_are_counted_and_skipped(unique_name):
    """On the Channels backend a layer message missing its fields used to raise
    in the listener, which then reconnected and reported a gap."""
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.test import override_settings

    from mega_cluster.pubsub.backends.channels import MESSAGE_TYPE

    from .helpers import CHANNEL_LAYERS

    with override_settings(CHANNEL_LAYERS=CHANNEL_LAYERS):
        apps = [
            make_app(
                unique_name,
                {"PUBSUB": pubsub_settings("channels")},
                node_id=f"{unique_name}-{node}",
            )
            for node in ("a", "b")
        ]
        try:
            a, b = apps
            seen, gaps = Recorder("seen"), Recorder("gaps")
            b.pubsub_manager.subscribe("news", seen, on_gap=lambda: gaps("gap"))
            wire = b.pubsub_manager.backend.wire_channel("news")
            layer = get_channel_layer()
            for message in (
                {"type": MESSAGE_TYPE},
                {"type": MESSAGE_TYPE, "w": wire, "d": 42},
                {"type": MESSAGE_TYPE, "w": wire, "d": b"not json"},
            ):
                async_to_sync(layer.group_send)(wire, message)
            a.pubsub_manager.publish("news", "after")
            assert seen.wait(1, timeout=10) == ["after"]
            assert wait_for(lambda: b.pubsub_manager.rejected == 3)
            assert gaps.items == [] and b.pubsub_manager.backend.reconnects == 0
        finally:
            for app in apps:
                app.stop()


@pytest.mark.timeout(300)
@PROPERTY
@given(channel=names, payload=payloads)
def test_apublish_round_trips_or_fails_at_the_call(pair, channel, payload):
    """Property, the async twin: apublish delivers the payload unchanged to this
    node (only_self) or raises the same documented error publish would."""
    a, _b, _probe = pair
    seen = Recorder()
    try:
        stop = a.pubsub_manager.subscribe(channel, seen)
    except DOCUMENTED:
        stop = None
    try:
        asyncio.run(a.pubsub_manager.apublish(channel, payload, only_self=True))
    except DOCUMENTED:
        with pytest.raises(DOCUMENTED):
            a.pubsub_manager.publish(channel, payload, only_self=True)
    else:
        assert stop is not None
        assert seen.wait(1, timeout=10) == [payload]
    if stop is not None:
        stop()
