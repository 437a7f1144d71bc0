"""An unreachable event store (PostgreSQL cut off through a TCP proxy, never the
shared server stopped) loses no event and strands none."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connections

from mega_cluster.circuit import open_circuits
from mega_cluster.testing import make_app

from .conftest import FAST, celery_options, wait_until


def _on_proxied_store(backend, unique_name):
    section = {"BACKEND": backend, **FAST}
    if backend == "celery":
        section["OPTIONS"] = celery_options("proxied")
    else:
        section["OPTIONS"] = {"DATABASE": "proxied"}
    return make_app(unique_name, {"EVENT_QUEUE": section})


@pytest.mark.celery
@pytest.mark.rabbitmq
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_store_outage_at_claim_loses_no_event(unique_name, proxied_store):
    """Messages that arrive while the event store is unreachable go back to the
    broker instead of being acked and lost: once the store is back, every event
    runs exactly once and is counted as succeeded."""
    app = _on_proxied_store("celery", unique_name)
    seen: list[int] = []
    try:
        app.event_queue.subscribe("outage", process=lambda p, ctx: seen.append(p))
        app.start()
        app.event_queue.publish("outage", 0)
        wait_until(lambda: seen == [0], what="the first event")
        proxied_store.cut()
        for i in range(1, 6):
            app.event_queue.publish("outage", i)  # the messages carry the events
        time.sleep(1.5)  # the messages arrive meanwhile; the store refuses
        assert seen == [0]
        proxied_store.restore()
        connections["proxied"].close()  # as a request boundary drops a broken one
        wait_until(lambda: sorted(seen) == list(range(6)), timeout=30)
        wait_until(lambda: not open_circuits(app.name), timeout=15, what="closed")
        wait_until(
            lambda: app.event_queue.stats("outage")["outage"]["succeeded"] == 6,
            timeout=15,
        )
        assert app.event_queue.stats("outage")["outage"]["running"] == 0
        assert sorted(seen) == list(range(6))  # none ran twice
    finally:
        proxied_store.restore()
        app.stop()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
@pytest.mark.parametrize(
    "backend",
    [
        pytest.param("celery", marks=[pytest.mark.celery, pytest.mark.rabbitmq]),
        "database",
    ],
)
def test_store_outage_while_a_handler_runs_records_its_outcome_later(
    backend, unique_name, proxied_store
):
    """The store goes away while a handler runs, so its outcome cannot be written
    when it returns: the outcome is written once the store is back. The event is
    neither left 'running', nor run again, nor dead-lettered as a lost attempt
    (max_retries is 0)."""
    app = _on_proxied_store(backend, unique_name)
    started = threading.Event()
    proceed = threading.Event()
    attempts: list[int] = []

    def handler(payload, ctx):
        attempts.append(ctx.attempt)
        started.set()
        proceed.wait(10)

    try:
        app.event_queue.subscribe("stranded", process=handler)
        app.start()
        app.event_queue.publish("stranded", "x")
        assert started.wait(15), "the handler did not start"
        proxied_store.cut()
        proceed.set()
        time.sleep(1.0)  # the outcome write fails meanwhile
        proxied_store.restore()
        connections["proxied"].close()  # as a request boundary drops a broken one
        # The store's circuit opened meanwhile; its probe closes it.
        wait_until(lambda: not open_circuits(app.name), timeout=15, what="closed")
        wait_until(
            lambda: app.event_queue.stats("stranded")["stranded"]["succeeded"] == 1,
            timeout=30,
            what="the event to end succeeded",
        )
        stats = app.event_queue.stats("stranded")["stranded"]
        assert (stats["running"], stats["pending"], stats["dead"]) == (0, 0, 0)
        time.sleep(0.5)  # a redelivery would show here
        assert attempts == [1]
    finally:
        proceed.set()
        proxied_store.restore()
        app.stop()
