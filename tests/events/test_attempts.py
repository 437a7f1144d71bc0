"""An event never runs twice at once, a drain cancels at once, a lost attempt is
logged: on every backend (issue #16)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from mega_cluster.models import QueuedEvent

from .conftest import wait_until


def test_a_timed_out_attempt_keeps_its_event_until_its_handler_returns(apps):
    """A sync handler that ignores its timeout: the retry starts only once the
    timed-out attempt returned (before, attempts 1, 2 and 3 ran at the same time
    with concurrency 1)."""
    app = apps.make()
    lock = threading.Lock()
    spans: list[tuple[int, float, float]] = []
    running: list[int] = []
    overlaps: list[tuple[int, list[int]]] = []

    def stubborn(payload, ctx):
        start = time.monotonic()
        with lock:
            if running:
                overlaps.append((ctx.attempt, list(running)))
            running.append(ctx.attempt)
        time.sleep(0.6)  # does not look at ctx.cancelled
        with lock:
            running.remove(ctx.attempt)
            spans.append((ctx.attempt, start, time.monotonic()))

    app.event_queue.subscribe("slow", process=stubborn, concurrency=1, timeout=0.1)
    app.start()
    app.event_queue.publish("slow", 1, max_retries=2)
    wait_until(lambda: app.event_queue.dead_letters("slow"), 30, "the dead letter")
    assert overlaps == []
    assert [attempt for attempt, _, _ in spans] == [1, 2, 3]
    [dead] = app.event_queue.dead_letters("slow")
    assert "timed out" in dead.error and dead.attempts == 3


def test_a_drain_sets_ctx_cancelled_when_it_starts(apps):
    """stop() sets ctx.cancelled of running handlers at once, not only when the
    drain timeout (here 60 s) expires: a cooperative handler stops early."""
    app = apps.make(DRAIN_TIMEOUT=60.0)
    started = threading.Event()
    seen: list[bool] = []

    def cooperative(payload, ctx):
        started.set()
        seen.append(ctx.cancelled.wait(20))

    app.event_queue.subscribe("drain", process=cooperative)
    app.start()
    app.event_queue.publish("drain", 1)
    assert started.wait(20), "the handler never started"
    app.stop()
    assert seen == [True]


def _lose_first_attempt(apps, app, event_id: str) -> None:
    """Leave ``event_id`` as a worker killed mid-attempt leaves it: running, attempt
    1, its lease lapsed (the broker still holds its message on Celery)."""
    if apps.backend.startswith("database"):
        [claimed] = app.event_queue.backend.claim("jobs", 10, lease=0.05)
        assert claimed.id == event_id
        time.sleep(0.1)
        return
    rows = QueuedEvent.objects.using(apps.database).filter(id=event_id)
    wait_until(rows.exists, 10, "the event's row")
    rows.update(status="running", attempts=1, lease_expires_at=time.time() - 1)


@pytest.mark.parametrize("max_retries", [0, 1])
def test_the_node_that_finds_a_lost_attempt_logs_it(apps, caplog, max_retries):
    """A worker died mid-attempt: the node that takes the event logs the lost
    attempt; it counts, so with max_retries=0 the event is dead-lettered unrun."""
    if apps.backend == "memory":
        pytest.skip("the memory backend has no leases: nothing outlives its worker")
    publisher = apps.make()
    # A dedupe key gives the event a row on every backend (lean mode too).
    event_id = publisher.event_queue.publish(
        "jobs", 1, max_retries=max_retries, dedupe_key="k"
    )
    _lose_first_attempt(apps, publisher, event_id)
    app = apps.make()
    seen: list[int] = []
    app.event_queue.subscribe("jobs", process=lambda p, ctx: seen.append(ctx.attempt))
    with caplog.at_level(logging.WARNING, logger="mega_cluster.events"):
        app.start()
        if max_retries:
            wait_until(lambda: seen, 30, "attempt 2")
            assert seen == [2]
        else:
            wait_until(lambda: app.event_queue.dead_letters("jobs"), 30, "dead")
            assert seen == []
    lost = [r.getMessage() for r in caplog.records if "was lost" in r.getMessage()]
    assert lost and f"event {event_id} on channel jobs: attempt 1 was lost" in lost[0]


def test_asubscribe_does_not_block_the_callers_loop(unique_name):
    """While subscribe() waits (here for the queue's lock, held by another thread
    until the caller's loop proves it still runs), asubscribe() leaves the loop
    free: before, it called subscribe() on the loop, which then stood still."""
    from mega_cluster.testing import make_app

    app = make_app(unique_name, {"EVENT_QUEUE": {"BACKEND": "memory"}})
    queue = app.event_queue
    holding, alive = threading.Event(), threading.Event()
    saw_loop: list[bool] = []

    def hold_the_lock() -> None:
        with queue._lock:
            holding.set()
            saw_loop.append(alive.wait(5))

    async def main() -> None:
        holder = threading.Thread(target=hold_the_lock)
        holder.start()
        assert holding.wait(5)
        subscribing = asyncio.create_task(
            queue.asubscribe("jobs", process=lambda p, ctx: None)
        )
        await asyncio.sleep(0.01)  # the subscribe is under way
        alive.set()  # only reached while the loop runs
        await subscribing
        await asyncio.to_thread(holder.join, 10)

    try:
        asyncio.run(main())
    finally:
        app.stop()
    assert saw_loop == [True]
    assert "jobs" in queue.subscriptions()
