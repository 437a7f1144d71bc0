"""The event queue's claims, leases and due times on PostgreSQL are decided by the
database server's clock: a node whose clock is 30 s ahead cannot take an event
whose lease is live, nor keep one that lapsed; one 30 s behind cannot have its
live claim taken early; a publish's delay is the same whoever's clock publishes.
The skewed node is a real process under libfaketime (every clock read, Python's and
the C library's, shifted; the monotonic clock not). Both the ``database`` backend's
claim and the Celery backend's store (what a redelivered message does) are shown.
"""

from __future__ import annotations

import time

import pytest

from mega_cluster.testing import make_app
from tests.cluster.test_locks import Lines
from tests.cluster.test_locks_clock_skew import faketime  # noqa: F401 - fixture
from tests.databases import ON_POSTGRES

pytestmark = [pytest.mark.cluster, *ON_POSTGRES]

WORKER = "tests/cluster/events_clock_worker.py"
QUEUE = {"BACKEND": "database", "OPTIONS": {"DATABASE": "postgres"}}


def _skewed(procs, faketime: str, offset: str, *args: object) -> Lines:  # noqa: F811
    env = {
        "LD_PRELOAD": faketime,
        "FAKETIME": offset,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    return Lines(procs.spawn([WORKER, *map(str, args)], env=env))


@pytest.fixture
def queue(unique_name):
    app = make_app(unique_name, {"EVENT_QUEUE": QUEUE})
    yield app.event_queue
    app.stop()


def _claim_until(backend, channel: str, seconds: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        claimed = backend.claim(channel, 10, lease=20)
        if claimed:
            return claimed
        time.sleep(0.1)
    return []


@pytest.mark.parametrize("mode", ["claim", "claim_one"])
def test_a_clock_30_s_ahead_does_not_take_a_live_claim(
    procs,
    unique_name,
    queue,
    faketime,  # noqa: F811
    mode,
):
    """Live for 25 s by the database's clock; by its own the node would see it
    lapsed 5 s ago."""
    event_id = queue.publish("jobs", 1)
    assert [e.id for e in queue.backend.claim("jobs", 10, lease=25)] == [event_id]
    target = "jobs" if mode == "claim" else event_id
    child = _skewed(procs, faketime, "+30s", mode, unique_name, target, 5)
    answer = child.next(timeout=60)
    if mode == "claim":
        assert answer == "none"
    else:  # live elsewhere, for what is left of the 25 s
        assert answer.startswith("busy "), answer
        assert 0 < float(answer.split()[1]) <= 25.5


@pytest.mark.parametrize("mode", ["claim", "claim_one"])
def test_the_live_claim_of_a_clock_30_s_behind_is_not_taken_early(
    procs,
    unique_name,
    queue,
    faketime,  # noqa: F811
    mode,
):
    """Its lease end must not be written in its own (early) time; and it sees the
    event due although its clock says it was published 30 s in the future."""
    event_id = queue.publish("jobs", 1)
    target = "jobs" if mode == "claim" else event_id
    child = _skewed(procs, faketime, "-30s", mode, unique_name, target, 20)
    assert child.next(timeout=60) == f"claimed {event_id}"
    assert queue.backend.claim("jobs", 10, lease=20) == []


@pytest.mark.parametrize("mode", ["claim", "claim_one"])
def test_the_lapsed_claim_of_a_clock_30_s_ahead_is_not_kept(
    procs,
    unique_name,
    queue,
    faketime,  # noqa: F811
    mode,
):
    """A 1 s lease of a node 30 s ahead lapses 1 s later by the database's clock
    (written in its own time it would stay live 31 s): the event is taken again
    as a lost attempt."""
    event_id = queue.publish("jobs", 1)
    target = "jobs" if mode == "claim" else event_id
    child = _skewed(procs, faketime, "+30s", mode, unique_name, target, 1)
    assert child.next(timeout=60) == f"claimed {event_id}"
    claimed = _claim_until(queue.backend, "jobs", 10)
    assert [e.id for e in claimed] == [event_id], "still leased 10 s later"
    assert claimed[0].lost and claimed[0].attempt == 2


def test_a_publish_is_due_by_the_database_clock_whoever_publishes(
    procs,
    unique_name,
    queue,
    faketime,  # noqa: F811
):
    """An undelayed publish of a node 30 s ahead is due at once (in its own time
    it would wait 30 s); a 20 s delay of a node 30 s behind is still 20 s away
    (in its own time it would be due already)."""
    ahead = _skewed(procs, faketime, "+30s", "publish", unique_name, "now", 0)
    event_id = ahead.next(timeout=60).split()[1]
    assert [e.id for e in _claim_until(queue.backend, "now", 10)] == [event_id]
    behind = _skewed(procs, faketime, "-30s", "publish", unique_name, "later", 20)
    assert behind.next(timeout=60).startswith("published ")
    assert queue.backend.claim("later", 10, lease=20) == []
    due = queue.backend.next_due("later")
    assert due is not None and 0 < due - time.time() <= 20.5
