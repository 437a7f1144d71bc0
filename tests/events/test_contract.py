"""The event-queue contract, run on every backend (memory, database on SQLite and
PostgreSQL, celery on RabbitMQ and on Redis behind Sentinel)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from mega_cluster.exceptions import (
    AlreadySubscribed,
    EventNotFound,
    InvalidName,
    MessageEncodeError,
)

from .conftest import CONTRACT_BACKENDS, Apps, apps_of, wait_until


@pytest.fixture(params=CONTRACT_BACKENDS)
def apps(request: pytest.FixtureRequest, unique_name: str) -> Iterator[Apps]:
    """The contract runs on every backend of the events suite and on a Redis broker
    behind Sentinel (celery-sentinel)."""
    yield from apps_of(request, unique_name)


class Recorder:
    """A handler that records what it saw and how many calls overlapped."""

    def __init__(self, *, fail: int = 0, block: threading.Event | None = None) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[Any, Any]] = []
        self.done: list[str] = []
        self.fail = fail
        self.block = block
        self.in_flight = 0
        self.max_in_flight = 0

    def __call__(self, payload: Any, ctx: Any) -> None:
        with self.lock:
            self.calls.append((payload, ctx))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.block is not None:
                assert self.block.wait(10), "test never released the handler"
            if ctx.attempt <= self.fail:
                raise RuntimeError(f"failing attempt {ctx.attempt}")
            with self.lock:
                self.done.append(ctx.id)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_publish_then_consume_with_context(apps):
    """A subscriber gets the decoded payload and ctx with the published id."""
    app = apps.make()
    rec = Recorder()
    app.event_queue.subscribe("orders", process=rec)
    app.start()
    event_id = app.event_queue.publish("orders", {"n": 1, "items": ["a"]})
    wait_until(lambda: rec.done, what="the event")
    payload, ctx = rec.calls[0]
    assert payload == {"n": 1, "items": ["a"]}
    assert (ctx.id, ctx.channel, ctx.attempt) == (event_id, "orders", 1)
    assert not ctx.cancelled.is_set()
    wait_until(lambda: app.event_queue.stats("orders")["orders"]["succeeded"] == 1)
    assert app.event_queue.stats("orders")["orders"] == {
        "pending": 0,
        "running": 0,
        "succeeded": 1,
        "failed": 0,
        "dead": 0,
    }


def test_subscribe_after_start_and_publisher_need_not_subscribe(apps):
    """Events published before anyone subscribes wait; a later subscriber runs them."""
    app = apps.make()
    app.start()
    ids = [app.event_queue.publish("later", i) for i in range(3)]
    assert app.event_queue.stats("later")["later"]["pending"] == 3
    rec = Recorder()
    app.event_queue.subscribe("later", process=rec)
    wait_until(lambda: len(rec.done) == 3, what="three events")
    assert sorted(rec.done) == sorted(ids)
    assert sorted(p for p, _ in rec.calls) == [0, 1, 2]


def test_other_app_does_not_see_channel(apps, unique_name):
    """Channels are namespaced by app: another app's event on the same channel name
    is not delivered here."""
    app = apps.make()
    other = apps.make(name=f"{unique_name}x"[:50], CONSUME=False)
    rec = Recorder()
    app.event_queue.subscribe("shared", process=rec)
    app.start()
    other.start()
    other_id = other.event_queue.publish("shared", "theirs")
    mine = app.event_queue.publish("shared", "mine")
    wait_until(lambda: rec.done)
    time.sleep(0.2)
    assert rec.done == [mine]
    assert [p for p, _ in rec.calls] == ["mine"]
    assert other.event_queue.stats("shared")["shared"]["pending"] == 1
    assert other_id != mine


def test_idle_gate_blocks_pulling(apps):
    """No event is taken while idle() returns False."""
    app = apps.make()
    gate = threading.Event()
    rec = Recorder()
    app.event_queue.subscribe("gated", process=rec, idle=gate.is_set)
    app.start()
    app.event_queue.publish("gated", 1)
    time.sleep(0.3)
    assert rec.calls == []
    gate.set()
    wait_until(lambda: rec.done, what="the event after the gate opened")


@pytest.mark.parametrize(("concurrency", "expected"), [(1, 1), (2, 2), (0, 6)])
def test_concurrency_observed_in_flight(apps, concurrency, expected):
    """At most ``concurrency`` events run at once (0 = unlimited: all six)."""
    app = apps.make()
    release = threading.Event()
    rec = Recorder(block=release)
    app.event_queue.subscribe("work", process=rec, concurrency=concurrency)
    app.start()
    for i in range(6):
        app.event_queue.publish("work", i)
    wait_until(lambda: rec.in_flight == expected, what=f"{expected} in flight")
    time.sleep(0.2)  # give a wrong implementation the chance to start more
    assert rec.max_in_flight == expected
    assert app.event_queue.stats("work")["work"]["running"] == expected
    release.set()
    wait_until(lambda: len(rec.done) == 6, what="all six events")
    assert rec.max_in_flight == expected


def test_attempts_are_one_plus_max_retries_then_dead(apps):
    """A failing event runs exactly 1 + max_retries times, same id, then is dead."""
    app = apps.make()
    rec = Recorder(fail=99)
    app.event_queue.subscribe("flaky", process=rec)
    app.start()
    event_id = app.event_queue.publish("flaky", {"x": 1}, max_retries=2)
    wait_until(lambda: app.event_queue.dead_letters("flaky"), what="dead letter")
    time.sleep(0.2)
    assert [ctx.attempt for _, ctx in rec.calls] == [1, 2, 3]
    assert {ctx.id for _, ctx in rec.calls} == {event_id}
    [dead] = app.event_queue.dead_letters("flaky")
    assert (dead.id, dead.channel, dead.payload, dead.attempts) == (
        event_id,
        "flaky",
        {"x": 1},
        3,
    )
    assert "failing attempt 3" in dead.error
    assert dead.failed_at is not None
    stats = app.event_queue.stats("flaky")["flaky"]
    assert (stats["dead"], stats["failed"], stats["succeeded"]) == (1, 3, 0)


def test_retry_then_success(apps):
    """An event that fails once and then succeeds is not dead-lettered."""
    app = apps.make()
    rec = Recorder(fail=1)
    app.event_queue.subscribe("flaky", process=rec, max_retries=3)
    app.start()
    event_id = app.event_queue.publish("flaky", 1)
    wait_until(lambda: rec.done == [event_id])
    assert [ctx.attempt for _, ctx in rec.calls] == [1, 2]
    wait_until(lambda: app.event_queue.stats("flaky")["flaky"]["succeeded"] == 1)
    assert app.event_queue.stats("flaky")["flaky"]["failed"] == 1
    assert app.event_queue.dead_letters() == []


def test_async_handler_timeout_cancels_and_retries(apps):
    """A timed-out async handler is cancelled, sees ctx.cancelled, and is retried."""
    app = apps.make()
    cancelled: list[int] = []
    flags: list[bool] = []

    async def slow(payload, ctx):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(ctx.attempt)
            flags.append(ctx.cancelled.is_set())
            raise

    app.event_queue.subscribe("slow", process=slow, timeout=0.2)
    app.start()
    event_id = app.event_queue.publish("slow", 1, max_retries=1)
    wait_until(lambda: app.event_queue.dead_letters("slow"), what="dead letter")
    assert cancelled == [1, 2]
    assert flags == [True, True]
    [dead] = app.event_queue.dead_letters("slow")
    assert dead.id == event_id and "timed out" in dead.error


def test_sync_handler_timeout_frees_slot(apps):
    """A timed-out sync handler gets ctx.cancelled and its slot runs the next event."""
    app = apps.make()
    seen: list[int] = []

    def handler(payload, ctx):
        seen.append(payload)
        if payload == "stuck":
            ctx.cancelled.wait(10)  # cooperative: returns once cancelled

    app.event_queue.subscribe("q", process=handler, concurrency=1)
    app.start()
    app.event_queue.publish("q", "stuck", timeout=0.2)
    app.event_queue.publish("q", "next")
    wait_until(lambda: "next" in seen, what="the next event after the timeout")
    wait_until(lambda: app.event_queue.dead_letters("q"))
    assert "timed out" in app.event_queue.dead_letters("q")[0].error


def test_dead_letter_retry_and_discard(apps):
    """A dead letter retried from the dead list succeeds with the same id; discard
    removes one; unknown ids raise EventNotFound."""
    app = apps.make()
    broken = threading.Event()
    broken.set()
    done: list[tuple[str, int]] = []

    def handler(payload, ctx):
        if broken.is_set():
            raise ValueError("broken")
        done.append((ctx.id, ctx.attempt))

    app.event_queue.subscribe("dl", process=handler)
    app.start()
    first = app.event_queue.publish("dl", 1)
    second = app.event_queue.publish("dl", 2)
    wait_until(lambda: len(app.event_queue.dead_letters("dl")) == 2)
    broken.clear()
    app.event_queue.retry_dead(first)
    wait_until(lambda: done, what="the retried event")
    assert done == [(first, 1)]
    app.event_queue.discard_dead(second)
    assert app.event_queue.dead_letters("dl") == []
    with pytest.raises(EventNotFound):
        app.event_queue.retry_dead(second)
    with pytest.raises(EventNotFound):
        app.event_queue.discard_dead(first)  # succeeded, not dead


def test_delay(apps):
    """A delayed event does not run before its delay."""
    app = apps.make()
    ran: list[float] = []
    app.event_queue.subscribe("later", process=lambda p, c: ran.append(time.time()))
    app.start()
    published = time.time()
    app.event_queue.publish("later", 1, delay=0.5)
    wait_until(lambda: ran, what="the delayed event")
    assert ran[0] - published >= 0.5


def test_dedupe_key(apps):
    """Same key and channel while pending: one event, publish returns its id."""
    app = apps.make()
    first = app.event_queue.publish("dd", 1, dedupe_key="user:1")
    assert app.event_queue.publish("dd", 2, dedupe_key="user:1") == first
    other = app.event_queue.publish("dd", 3, dedupe_key="user:2")
    other_channel = app.event_queue.publish("dd2", 4, dedupe_key="user:1")
    assert len({first, other, other_channel}) == 3
    rec = Recorder()
    app.event_queue.subscribe("dd", process=rec)
    app.start()
    wait_until(lambda: len(rec.done) == 2)
    time.sleep(0.1)
    assert sorted(p for p, _ in rec.calls) == [1, 3]
    # Once it ran the key is free again.
    assert app.event_queue.publish("dd", 5, dedupe_key="user:1") != first


def test_next_event_starts_when_slot_frees(apps):
    """With a 30 s poll interval the next event still starts right after a slot frees."""
    app = apps.make(POLL_INTERVAL=30.0)
    release = threading.Event()
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}

    def handler(payload, ctx):
        starts[payload] = time.monotonic()
        if payload == 0:
            release.wait(10)
        ends[payload] = time.monotonic()

    app.event_queue.subscribe("slot", process=handler, concurrency=1)
    app.start()
    app.event_queue.publish("slot", 0)
    app.event_queue.publish("slot", 1)
    wait_until(lambda: 0 in starts)
    time.sleep(0.1)
    assert 1 not in starts
    release.set()
    wait_until(lambda: 1 in starts, timeout=5, what="the second event")
    assert starts[1] - ends[0] < 2.0  # far below the 30 s poll interval


def test_graceful_stop_waits_for_in_flight(apps):
    """stop() returns only after the running handler finished; the event succeeded."""
    app = apps.make()
    finished: list[int] = []

    def handler(payload, ctx):
        time.sleep(0.5)
        finished.append(payload)

    app.event_queue.subscribe("drain", process=handler)
    app.start()
    app.event_queue.publish("drain", 7)
    wait_until(lambda: app.event_queue.stats("drain")["drain"]["running"] == 1)
    queue = app.event_queue
    app.stop()
    assert finished == [7]
    assert queue.stats("drain")["drain"]["succeeded"] == 1


def test_publish_in_atomic_waits_for_commit(apps):
    """Inside atomic() the event exists once the block commits, never on rollback:
    the database backend writes its row in the block (seen by the block's own
    connection only), the others queue it at commit (celery: from the outbox)."""
    app = apps.make()
    app.start()
    alias = apps.transaction_alias
    in_block = app.event_queue.backend.writes_in_transaction
    with transaction.atomic(using=alias):
        app.event_queue.publish("tx", "committed")
        if in_block:
            assert app.event_queue.stats("tx")["tx"]["pending"] == 1
            seen = []
            other = threading.Thread(
                target=lambda: seen.append(app.event_queue.stats("tx"))
            )
            other.start()
            other.join(30)
            assert seen == [{}]  # another connection: not committed yet
        else:
            assert app.event_queue.stats("tx") == {}
    assert app.event_queue.stats("tx")["tx"]["pending"] == 1

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic(using=alias):
        app.event_queue.publish("tx", "rolled back")
        raise Rollback
    assert app.event_queue.stats("tx")["tx"]["pending"] == 1


def test_bad_input_raises_at_the_call(apps):
    """Bad channel, payload, size and arguments raise at the call; nothing is sent."""
    app = apps.make(name=None)
    queue = app.event_queue
    with pytest.raises(InvalidName):
        queue.publish("bad channel!", 1)
    with pytest.raises(InvalidName):
        queue.subscribe("", process=print)
    with pytest.raises(MessageEncodeError, match="JSON"):
        queue.publish("c", {"obj": object()})
    with pytest.raises(MessageEncodeError, match="MESSAGE_MAX_BYTES"):
        queue.publish("c", "x" * (1024 * 1024 + 1))
    with pytest.raises(ValueError, match="max_retries"):
        queue.publish("c", 1, max_retries=-1)
    with pytest.raises(ValueError, match="delay"):
        queue.publish("c", 1, delay=-1)
    with pytest.raises(TypeError, match="process"):
        queue.subscribe("c", process="not callable")
    queue.subscribe("c", process=print)
    with pytest.raises(AlreadySubscribed):
        queue.subscribe("c", process=print)
    assert queue.stats() == {
        "c": dict.fromkeys(("pending", "running", "succeeded", "failed", "dead"), 0)
    }


def test_unsubscribe_stops_taking_events(apps):
    """After unsubscribe() new events wait for another consumer."""
    app = apps.make()
    rec = Recorder()
    app.event_queue.subscribe("u", process=rec)
    app.start()
    app.event_queue.publish("u", 1)
    wait_until(lambda: rec.done)
    app.event_queue.unsubscribe("u")
    app.event_queue.publish("u", 2)
    time.sleep(0.3)
    assert len(rec.calls) == 1
    assert app.event_queue.stats("u")["u"]["pending"] == 1


def test_async_twins(apps):
    """asubscribe / apublish / astats / adead_letters work from async code."""
    asyncio.run(_async_twins(apps))


async def _async_twins(apps):
    from asgiref.sync import sync_to_async

    app = apps.make()
    got: list[Any] = []

    async def handler(payload, ctx):
        got.append((payload, ctx.attempt))

    await app.event_queue.asubscribe("a", process=handler)
    await sync_to_async(app.start)()
    event_id = await app.event_queue.apublish("a", {"k": "v"})
    for _ in range(500):
        if got:
            break
        await asyncio.sleep(0.01)
    assert got == [({"k": "v"}, 1)]
    for _ in range(500):
        stats = await app.event_queue.astats("a")
        if stats["a"]["succeeded"] == 1:
            break
        await asyncio.sleep(0.01)
    assert stats["a"]["succeeded"] == 1
    assert await app.event_queue.adead_letters() == []
    with pytest.raises(EventNotFound):
        await app.event_queue.aretry_dead(event_id)
    await sync_to_async(app.stop)()
    # sync_to_async ran the queries in its own thread: close that thread's connections
    from django.db import connections

    await sync_to_async(connections.close_all)()


def test_succeeded_events_are_pruned_after_retention_and_still_counted(apps):
    """Succeeded events are forgotten ``RETENTION`` seconds after they finished, so
    the store does not grow with every event ever run; ``stats()`` keeps counting
    them, their failed attempts included."""
    app = apps.make(RETENTION=0.3)
    rec = Recorder(fail=1)
    app.event_queue.subscribe("kept", process=rec, max_retries=1)
    app.start()
    ids = [app.event_queue.publish("kept", i) for i in range(3)]
    wait_until(lambda: sorted(rec.done) == sorted(ids), what="the events")
    wait_until(
        lambda: app.event_queue.stats("kept")["kept"]["succeeded"] == 3,
        what="the outcomes",
    )
    wait_until(
        lambda: app.event_queue.events("kept", "succeeded") == [],
        timeout=10,
        what="the prune",
    )
    assert app.event_queue.stats("kept")["kept"] == {
        "pending": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 3,
        "dead": 0,
    }
