"""Event-queue arguments checked at the call on every backend (docs/limits.md):
nothing a later layer (PostgreSQL, the broker, the consumer) would refuse or
never run gets queued."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from mega_cluster.exceptions import (
    ArgumentTypeError,
    InvalidArgument,
    InvalidName,
    MessageEncodeError,
)

DOCUMENTED = (InvalidName, InvalidArgument, ArgumentTypeError, MessageEncodeError)
PROPERTY = hsettings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def test_names_with_a_trailing_newline_fail_on_every_call(apps):
    """On PostgreSQL "a" * 200 + "\\n" used to reach the database as a DataError."""
    queue = apps.make().event_queue
    for bad in ("x\n", "a" * 200 + "\n"):
        with pytest.raises(InvalidName, match="trailing newline"):
            queue.publish(bad, 1)
        with pytest.raises(InvalidName):
            queue.publish("c", 1, dedupe_key=bad)
        with pytest.raises(InvalidName):
            queue.subscribe(bad, process=print)
        with pytest.raises(InvalidName):
            queue.unsubscribe(bad)
        with pytest.raises(InvalidName):
            queue.stats(bad)
        with pytest.raises(InvalidName):
            queue.dead_letters(bad)
    assert queue.stats() == {}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"delay": math.nan}, InvalidArgument),
        ({"delay": math.inf}, InvalidArgument),
        ({"delay": 1e300}, InvalidArgument),
        ({"timeout": 10**400}, InvalidArgument),
        ({"timeout": math.nan}, InvalidArgument),
        ({"timeout": 0}, InvalidArgument),
        ({"max_retries": 2**40}, InvalidArgument),
        ({"max_retries": 2**31}, InvalidArgument),
        ({"max_retries": True}, ArgumentTypeError),
        ({"max_retries": 1.0}, ArgumentTypeError),
        ({"delay": "5"}, ArgumentTypeError),
    ],
    ids=lambda v: repr(v)[:30] if isinstance(v, dict) else v.__name__,
)
def test_bad_numbers_fail_at_publish(apps, kwargs, error):
    """delay=NaN/inf was queued and never ran; timeout=10**400 raised
    OverflowError; max_retries=2**40 reached PostgreSQL as DataError."""
    queue = apps.make().event_queue
    with pytest.raises(error, match=next(iter(kwargs))):
        queue.publish("c", 1, **kwargs)
    assert queue.stats().get("c", {}).get("pending", 0) == 0
    assert queue.publish("c", 1, max_retries=2**31 - 1, timeout=10**9, delay=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"concurrency": 2**31},
        {"concurrency": -1},
        {"timeout": math.inf},
        {"max_retries": 2**40},
        {"concurrency": True},
    ],
    ids=repr,
)
def test_bad_numbers_fail_at_subscribe(apps, kwargs):
    queue = apps.make().event_queue
    with pytest.raises((InvalidArgument, ArgumentTypeError)):
        queue.subscribe("c", process=print, **kwargs)
    assert queue.subscriptions() == {}


def test_payloads_that_are_not_strict_json_fail_at_publish(apps):
    queue = apps.make().event_queue
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    for payload in (math.nan, deep, "\ud800"):
        with pytest.raises(MessageEncodeError):
            queue.publish("c", payload)


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
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats()
        | st.text(st.characters(codec=None, categories=None), max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=10,
    ),
    delay=st.one_of(st.none(), st.floats(), st.sampled_from([10**400, 3600])),
    timeout=st.one_of(st.none(), st.floats(), st.integers()),
    max_retries=st.one_of(st.integers(), st.sampled_from([2**40, True])),
)
def test_any_publish_is_stored_as_given_or_fails_at_the_call(
    apps, channel, payload, delay, timeout, max_retries
):
    """Property: publish returns an id and (on backends that list events) the
    stored payload is the one given, or a documented error is raised; publishing
    works afterwards."""
    queue = (apps.apps or [apps.make()])[0].event_queue  # one app for all examples
    try:
        event_id = queue.publish(
            channel, payload, delay=delay, timeout=timeout, max_retries=max_retries
        )
    except DOCUMENTED:
        pass
    else:
        if apps.backend in ("memory", "database"):  # celery lists only some
            stored = {e.id: e.payload for e in queue.events(channel)}
            assert stored[event_id] == payload
    assert queue.publish("probe", 1, delay=3600)
