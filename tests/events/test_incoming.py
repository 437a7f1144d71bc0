"""Incoming events are checked as publish() checks them: malformed rows written
straight into the queue's table and malformed messages put straight on the real
Celery broker are counted, logged and dead-lettered (or, when they name no event
of the app, dropped); later events run and the worker keeps going."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from mega_cluster import metrics
from mega_cluster.events.attempts import incoming
from mega_cluster.events.backends.celery.protocol import TASK_NAME
from mega_cluster.testing.factories import QueuedEventFactory
from tests.databases import DATABASES, ON_POSTGRES

from .conftest import FAST, celery_options, wait_until

#: A small MESSAGE_MAX_BYTES, so an oversize payload stays small.
MAX_BYTES = 1000

#: payload text -> the reason a consumer gives (the dead letter's error).
BAD_PAYLOADS = {
    "{not json": "not JSON",
    "NaN": "NaN, which is not JSON",
    '{"ratio": -Infinity}': "-Infinity, which is not JSON",
    "[" * 150 + "]" * 150: "nests deeper than 100",
    json.dumps("x" * MAX_BYTES): "over MESSAGE_MAX_BYTES",
}


def _app(unique_name, backend, database):
    from mega_cluster.testing import make_app

    options = (
        celery_options(database) if backend == "celery" else {"DATABASE": database}
    )
    return make_app(
        unique_name,
        {
            "MESSAGE_MAX_BYTES": MAX_BYTES,
            "EVENT_QUEUE": {"BACKEND": backend, **FAST, "OPTIONS": options},
        },
    )


def _dead(queue) -> dict[str, str]:
    return {d.id: d.error for d in queue.dead_letters("jobs", 100)}


def _rejected_metric(app_name: str, source: str) -> float:
    if not metrics.ENABLED:
        return 0.0
    value = metrics.REGISTRY.get_sample_value(
        "mega_cluster_events_rejected_total", {"app": app_name, "source": source}
    )
    return value or 0.0


@pytest.mark.parametrize("alias", DATABASES)
def test_malformed_rows_of_the_database_queue_are_dead_lettered(alias, unique_name):
    app = _app(unique_name, "database", alias)
    queue = app.event_queue
    seen: list = []
    try:
        bad = {
            QueuedEventFactory(
                using=alias,
                app_name=app.name,
                payload=text,
                max_retries=3,  # rejected at once: no retry
            ).id: why
            for text, why in BAD_PAYLOADS.items()
        }
        if alias == "postgres":  # SQLite stores a NaN as NULL
            nan_timeout = QueuedEventFactory(
                using=alias, app_name=app.name, data=1, timeout=float("nan")
            ).id
            bad[nan_timeout] = "timeout is nan"
        queue.subscribe("jobs", process=lambda payload, ctx: seen.append(payload))
        app.start()
        queue.publish("jobs", {"ok": 1})
        wait_until(lambda: seen == [{"ok": 1}], timeout=20, what="the good event")
        wait_until(lambda: set(_dead(queue)) == set(bad), timeout=20)
        for event_id, error in _dead(queue).items():
            assert error.startswith(incoming.REJECTED), error
            assert bad[event_id] in error
        assert queue.rejected == len(bad)
        if metrics.ENABLED:
            assert _rejected_metric(app.name, "event") == len(bad)
        # the listings still show them (the raw text where it is not JSON)
        listed = {e.id: e for e in queue.events("jobs", "dead", 100)}
        assert listed[next(iter(bad))].payload == "{not json"

        def counts():
            stats = queue.stats("jobs")["jobs"]
            return stats["dead"], stats["succeeded"], stats["pending"]

        # the handler returns before its outcome is written
        wait_until(lambda: counts() == (len(bad), 1, 0), timeout=15, what="stats")
        queue.publish("jobs", {"ok": 2})  # the worker keeps going
        wait_until(lambda: seen == [{"ok": 1}, {"ok": 2}], timeout=20)
    finally:
        app.stop()


@pytest.mark.celery
@pytest.mark.rabbitmq
@ON_POSTGRES[0]
@ON_POSTGRES[1]
def test_malformed_celery_messages_are_counted_and_never_block(unique_name):
    from mega_cluster.testing import make_app

    app = make_app(
        unique_name,
        {
            "MESSAGE_MAX_BYTES": MAX_BYTES,
            "EVENT_QUEUE": {
                "BACKEND": "celery",
                **FAST,
                "OPTIONS": celery_options("postgres"),
            },
        },
    )
    queue = app.event_queue
    broker = queue.backend.broker
    seen: list = []

    def send(*args) -> None:
        broker.celery.send_task(TASK_NAME, args=list(args), queue=broker.queue("jobs"))

    def new_id() -> str:
        return uuid.uuid4().hex

    try:
        queue.subscribe("jobs", process=lambda payload, ctx: seen.append(payload))
        app.start()
        unknown_before = incoming.rejected("?")
        # Dead-lettered: they name an event of this app.
        bad = {}
        for text, why in BAD_PAYLOADS.items():
            for lean in ([], [1]):  # a first message, and a lean one
                event_id = new_id()
                send(app.name, event_id, "jobs", [text, 2, None, *lean])
                bad[event_id] = why
        for carried, why in (
            (['"x"', -1, None], "max_retries is -1"),
            (['"x"', 0, -5], "timeout is -5"),
            ([{"a": 1}, 0, None], "payload is a dict"),
            (['"x\x00"', 0, None], "NUL"),
            ("junk", "not [payload, max_retries, timeout]"),
            (['"x"', 0, None, 7], "fourth item is 7"),
        ):
            event_id = new_id()
            send(app.name, event_id, "jobs", carried)
            bad[event_id] = why
        # Dropped: no event of this app.
        send(app.name, 12345, "jobs")
        send(app.name, new_id(), "bad\nchannel")
        send(app.name, "x" * 40, "jobs")
        send("t-no-such-app", new_id(), "jobs")
        send(app.name)
        queue.publish("jobs", {"ok": 1})
        wait_until(lambda: seen == [{"ok": 1}], timeout=30, what="the good event")
        wait_until(lambda: set(_dead(queue)) == set(bad), timeout=30)
        for event_id, error in _dead(queue).items():
            assert error.startswith(incoming.REJECTED), error
            assert bad[event_id] in error, (bad[event_id], error)
        wait_until(lambda: queue.rejected == len(bad) + 3, timeout=10)
        assert incoming.rejected("?") - unknown_before == 2
        if metrics.ENABLED:
            assert _rejected_metric(app.name, "event") == len(bad)
            assert _rejected_metric(app.name, "message") == 3
        queue.publish("jobs", {"ok": 2})  # the worker keeps going
        wait_until(lambda: seen == [{"ok": 1}, {"ok": 2}], timeout=30)
        time.sleep(0.3)  # a redelivered malformed message would show here
        assert seen == [{"ok": 1}, {"ok": 2}]
    finally:
        app.stop()
