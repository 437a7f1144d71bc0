"""Celery backend with ``OPTIONS["BOOKKEEPING"] = "failures"``: an event that
succeeds at its first attempt leaves no row; one that fails, runs long or is
redelivered by the broker gets one; ``stats()`` counts both kinds across processes.

The contract suite runs on this mode too (``celery-failures-rabbitmq``); these
tests prove what it cannot see: that the rows are really not written, and the paths
only a broker redelivery or a long handler takes.
"""

from __future__ import annotations

import threading
import time

import pytest

from mega_cluster.checks import check_settings
from mega_cluster.exceptions import ConfigurationError
from mega_cluster.models import QueuedEvent
from mega_cluster.testing import make_app

from .conftest import FAST, celery_options, queue_settings, wait_until

pytestmark = [
    pytest.mark.celery,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]


#: The store on PostgreSQL (lazy commits, one-statement claims) and on SQLite
#: (plain commits, the portable statements).
STORES = pytest.mark.parametrize("store", ["postgres", "default"])


def _rows(app_name: str, store: str = "postgres") -> list[tuple[str, str, int]]:
    return list(
        QueuedEvent.objects.using(store)
        .filter(app_name=app_name)
        .values_list("id", "status", "attempts")
    )


@pytest.mark.rabbitmq
def test_first_attempt_successes_leave_no_row_and_are_counted_everywhere(
    unique_name,
):
    """Successes are counted in the consumer's memory and reach the tallies within
    about a second, so a process that only publishes (another node) sees them; the
    broker queue's depth is its ``pending``."""
    settings = queue_settings("celery-failures", "postgres")
    consumer = make_app(unique_name, settings)
    web = make_app(
        unique_name, queue_settings("celery-failures", "postgres", CONSUME=False)
    )
    done: list[int] = []
    try:
        consumer.event_queue.subscribe("mail", process=lambda p, c: done.append(p))
        consumer.start()
        for i in range(5):
            web.event_queue.publish("mail", i)
        wait_until(lambda: len(done) == 5, what="five events")
        wait_until(
            lambda: web.event_queue.stats("mail").get("mail", {}).get("succeeded") == 5,
            what="the tallied successes, seen from the publisher",
        )
        assert web.event_queue.stats("mail")["mail"] == {
            "pending": 0,
            "running": 0,
            "succeeded": 5,
            "failed": 0,
            "dead": 0,
        }
        assert _rows(unique_name) == []
        assert web.event_queue.events("mail") == []
        # No consumer on this channel: its messages are the pending count.
        for i in range(3):
            web.event_queue.publish("backlog", i)
        wait_until(
            lambda: web.event_queue.stats().get("backlog", {}).get("pending") == 3,
            what="three pending in the broker queue",
        )
        assert _rows(unique_name) == []
    finally:
        web.stop()
        consumer.stop()


@pytest.mark.rabbitmq
@STORES
def test_long_running_event_gets_a_row_that_other_nodes_see(unique_name, store):
    """An event still running at a lease renewal gets its row: another process's
    ``stats()`` counts it running, its outcome goes to the row."""
    settings = queue_settings("celery-failures", store, LEASE=0.6)
    consumer = make_app(unique_name, settings)
    observer = make_app(unique_name, queue_settings("celery-failures", store))
    release = threading.Event()
    try:
        consumer.event_queue.subscribe("slow", process=lambda p, c: release.wait(10))
        consumer.start()
        event_id = observer.event_queue.publish("slow", 1)
        wait_until(
            lambda: _rows(unique_name, store) == [(event_id, "running", 1)],
            what="the running event's row",
        )
        assert observer.event_queue.stats("slow")["slow"]["running"] == 1
        release.set()
        wait_until(
            lambda: _rows(unique_name, store) == [(event_id, "succeeded", 1)],
            what="the outcome in the row",
        )
        assert observer.event_queue.stats("slow")["slow"]["succeeded"] == 1
    finally:
        release.set()
        observer.stop()
        consumer.stop()


@pytest.mark.rabbitmq
@STORES
def test_redelivered_message_counts_the_lost_attempt(unique_name, store):
    """A lean message the broker delivers again (a consumer took it and died, or
    gave it back) gets a row with the lost attempt counted: the handler sees
    attempt 2."""
    from kombu import Connection

    publisher = make_app(unique_name, queue_settings("celery-failures", store))
    consumer = make_app(unique_name, queue_settings("celery-failures", store))
    seen: list[int] = []
    try:
        event_id = publisher.event_queue.publish("jobs", {"n": 1}, max_retries=2)
        backend = publisher.event_queue.backend
        # A consumer that takes the message and gives it back unacknowledged:
        # the broker marks it redelivered.
        with Connection(celery_options("postgres")["BROKER_URL"]) as conn:
            queue = conn.SimpleQueue(backend.broker.queue("jobs"))
            message = queue.get(timeout=10)
            assert message.delivery_info.get("redelivered") is False
            message.requeue()
            queue.close()
        consumer.event_queue.subscribe(
            "jobs", process=lambda p, ctx: seen.append(ctx.attempt)
        )
        consumer.start()
        wait_until(lambda: seen, what="the redelivered event")
        assert seen == [2]
        wait_until(
            lambda: _rows(unique_name, store) == [(event_id, "succeeded", 2)],
            what="its row",
        )
    finally:
        consumer.stop()
        publisher.stop()


def test_redis_visibility_timeout_copy_of_a_long_event_does_not_run_it_twice(
    unique_name, monkeypatch
):
    """Redis gives an unacknowledged message to a consumer again after its
    visibility timeout, marked redelivered. The long-running lean event has its
    row by then (renewal at ``LEASE / 3``), so the copy waits for it instead of
    running it a second time at once."""
    from mega_cluster.events.backends.celery import consumer as celery_consumer
    from tests.servers import redis_server

    calls: list[bool] = []
    original = celery_consumer.CeleryConsumer.deliver

    def spy(self, event_id, channel, first=None, redelivered=False):
        calls.append(redelivered)
        return original(self, event_id, channel, first, redelivered)

    monkeypatch.setattr(celery_consumer.CeleryConsumer, "deliver", spy)
    attempts: list[int] = []
    release = threading.Event()
    with redis_server() as broker:
        section = {
            "EVENT_QUEUE": {
                "BACKEND": "celery",
                **FAST,
                "LEASE": 0.6,
                "OPTIONS": {
                    "BROKER_URL": f"redis://127.0.0.1:{broker.port}/0",
                    "DATABASE": "postgres",
                    "BOOKKEEPING": "failures",
                    "TRANSPORT_OPTIONS": {
                        "visibility_timeout": 1,
                        "unacked_restore_interval": 0.2,
                        "unacked_restore_throttle": 1,
                    },
                },
            }
        }
        app = make_app(unique_name, section)
        try:

            def handler(payload, ctx):
                attempts.append(ctx.attempt)
                release.wait(10)

            app.event_queue.subscribe("long", process=handler, concurrency=2)
            app.start()
            event_id = app.event_queue.publish("long", 1)
            wait_until(lambda: attempts, what="the first attempt")
            wait_until(lambda: True in calls, timeout=15, what="the redelivered copy")
            time.sleep(0.5)
            release.set()
            wait_until(
                lambda: _rows(unique_name) == [(event_id, "succeeded", 1)],
                what="one success in the row",
            )
            time.sleep(1.5)  # a copy sent again later would run by now
            assert attempts == [1]
        finally:
            release.set()
            app.stop()


def test_bookkeeping_must_be_all_or_failures(unique_name):
    from django.test import override_settings

    section = queue_settings("celery", "postgres")
    section["EVENT_QUEUE"]["OPTIONS"]["BOOKKEEPING"] = "none"
    with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **section}):
        messages = check_settings()
    assert any(
        m.id == "mega_cluster.E012" and "BOOKKEEPING" in m.msg for m in messages
    ), messages
    with pytest.raises(ConfigurationError, match=r"BOOKKEEPING'\] is 'none'"):
        make_app(unique_name, section).event_queue  # noqa: B018
    for good in ("all", "failures"):
        section["EVENT_QUEUE"]["OPTIONS"]["BOOKKEEPING"] = good
        with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **section}):
            assert not [m for m in check_settings() if "BOOKKEEPING" in m.msg]


def test_visibility_timeout_under_a_third_of_the_lease_is_w007(unique_name):
    """A Redis visibility timeout that could redeliver a lean event before its first
    lease renewal wrote its row is a warning; with a row per event it is not."""
    from django.test import override_settings

    def w007(bookkeeping: str, visibility: float | None, lease: float = 30.0):
        section = queue_settings("celery", "postgres", LEASE=lease)
        options = section["EVENT_QUEUE"]["OPTIONS"]
        options["BOOKKEEPING"] = bookkeeping
        if visibility is not None:
            options["TRANSPORT_OPTIONS"] = {"visibility_timeout": visibility}
        with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **section}):
            return [m.msg for m in check_settings() if m.id == "mega_cluster.W007"]

    [warning] = w007("failures", 10)
    assert "visibility_timeout (10s)" in warning and "LEASE/3 (10s)" in warning
    assert w007("failures", 11) == []
    assert w007("failures", 5, lease=60.0) != []
    assert w007("failures", None) == []  # Celery's default, an hour
    assert w007("all", 1) == []
