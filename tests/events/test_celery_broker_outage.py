"""Celery backend: a broker that refuses the consumer's messages strands no event.

The broker (the shared RabbitMQ, never stopped) is reached for writing through a
:class:`TcpProxy` that the test cuts, while the worker keeps reading over its own
connection (``broker_read_url`` / ``broker_write_url`` of the Celery app): the
consumer stays up and only its sends fail, which is when a retry's message could
be lost after its row already says "pending".
"""

from __future__ import annotations

import logging
import threading
from urllib.parse import urlsplit

import pytest
from django.conf import settings

from mega_cluster.events.backends.celery import CELERY_SETTINGS
from mega_cluster.exceptions import BackendUnavailable
from mega_cluster.testing import make_app

from .conftest import FAST, wait_until

pytestmark = [
    pytest.mark.celery,
    pytest.mark.rabbitmq,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]

#: The Celery app of the test under way, as OPTIONS["APP"] names it.
split_celery = None


@pytest.fixture
def broker_writes(unique_name):
    """``(app, proxy)``: a cluster app on a Celery app whose writes go through a
    proxy to RabbitMQ and whose worker reads directly; ``app.successor()`` builds
    another node of it."""
    from celery import Celery

    from tests.servers import TcpProxy

    global split_celery
    url = urlsplit(settings.AMQP_URL)
    proxy = TcpProxy(url.port or 5672, url.hostname or "127.0.0.1")
    netloc = f"{url.username}:{url.password}@127.0.0.1:{proxy.port}"
    split_celery = Celery("split", set_as_current=False)
    split_celery.conf.update(
        broker_read_url=settings.AMQP_URL,
        broker_write_url=url._replace(netloc=netloc).geturl(),
        **CELERY_SETTINGS,
        # a refused publish fails fast (the default policy retries ~1 s)
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0.1},
    )
    options = {
        "APP": f"{__name__}.split_celery",
        "DATABASE": "postgres",
        "QUEUE_ARGUMENTS": {"x-expires": 600_000},
    }
    section = {"BACKEND": "celery", "OPTIONS": options, **FAST}
    outbox = {"RELAY_AFTER": 0.5, "RELAY_INTERVAL": 0.1, "RELAY_MAX_DELAY": 0.5}
    apps = [make_app(unique_name, {"EVENT_QUEUE": section, "OUTBOX": outbox})]

    def successor():
        apps.append(make_app(unique_name, {"EVENT_QUEUE": section, "OUTBOX": outbox}))
        return apps[-1]

    apps[0].successor = successor
    try:
        yield apps[0], proxy
    finally:
        proxy.restore()
        for app in reversed(apps):
            app.stop()
        proxy.close()


def test_retry_message_refused_by_the_broker_is_sent_once_it_is_back(
    broker_writes, caplog
):
    """Attempt 1 fails while the broker refuses writes: the retry's message is sent
    again until the broker takes it (the event keeps its slot meanwhile), and
    attempt 2 runs. Given up at the first refusal, the event would stay pending
    forever with no message to run it."""
    app, proxy = broker_writes
    attempts = []

    def handler(payload, ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            proxy.cut()  # the retry's message is what the broker refuses
            threading.Timer(1.5, proxy.restore).start()
            raise RuntimeError("first attempt fails")

    app.event_queue.subscribe("flaky", process=handler)
    app.start()
    with caplog.at_level(logging.WARNING, "mega_cluster.events.celery"):
        app.event_queue.publish("flaky", {"n": 1}, max_retries=1)
        wait_until(lambda: attempts == [1, 2], timeout=30, what="the retried attempt")
        wait_until(
            lambda: app.event_queue.stats("flaky")["flaky"]["succeeded"] == 1,
            what="the outcome",
        )
    stats = app.event_queue.stats("flaky")["flaky"]
    assert (stats["pending"], stats["failed"], stats["dead"]) == (0, 1, 0)
    assert any("refuses its message" in r.getMessage() for r in caplog.records)


def test_an_event_committed_while_the_broker_refuses_is_queued_by_the_relay(
    broker_writes,
):
    """Published inside atomic(): the outbox row commits with the transaction; the
    send after commit is refused; once the broker is back the relay queues it and
    it runs once. A rolled-back block leaves no row."""
    from django.db import transaction

    from mega_cluster.models import OutboxMessage

    app, proxy = broker_writes
    runs = []
    app.event_queue.subscribe("outboxed", process=lambda p, ctx: runs.append(p))
    app.start()
    rows = OutboxMessage.objects.using("postgres").filter(app_name=app.name)
    with pytest.raises(RuntimeError), transaction.atomic(using="postgres"):
        app.event_queue.publish("outboxed", "rolled back")
        raise RuntimeError("rollback")
    assert not rows.exists()
    proxy.cut()
    with transaction.atomic(using="postgres"):
        app.event_queue.publish("outboxed", "kept")
        assert rows.filter(kind="event").count() == 1  # in the transaction
    assert rows.get().sent_at is None
    proxy.restore()
    wait_until(lambda: runs == ["kept"], timeout=30, what="the relayed event")
    wait_until(lambda: rows.get().sent_at is not None, what="the sent mark")
    assert app.outbox.relayed == 1
    wait_until(
        lambda: app.event_queue.stats("outboxed")["outboxed"]["succeeded"] == 1,
        what="the outcome",
    )
    assert runs == ["kept"]


def test_retry_dead_refused_by_the_broker_keeps_the_dead_letter(broker_writes):
    """retry_dead() while the broker refuses writes raises BackendUnavailable and
    leaves the event a dead letter (not pending with no message); retried again
    once the broker is back, it runs."""
    app, proxy = broker_writes
    runs = []

    def handler(payload, ctx):
        runs.append(payload)
        if len(runs) == 1:
            raise RuntimeError("dead on its only attempt")

    app.event_queue.subscribe("graves", process=handler)
    app.start()
    event_id = app.event_queue.publish("graves", "x")
    wait_until(lambda: app.event_queue.dead_letters("graves"), what="the dead letter")
    proxy.cut()
    with pytest.raises(BackendUnavailable):
        app.event_queue.retry_dead(event_id)
    assert [d.id for d in app.event_queue.dead_letters("graves")] == [event_id]
    assert app.event_queue.stats("graves")["graves"]["pending"] == 0
    proxy.restore()
    app.event_queue.retry_dead(event_id)
    wait_until(lambda: runs == ["x", "x"], what="the retried dead letter")
    wait_until(
        lambda: app.event_queue.stats("graves")["graves"]["succeeded"] == 1,
        what="the outcome",
    )


def test_stopping_while_the_broker_refuses_puts_the_message_back(broker_writes):
    """A consumer stopped while its retry message is refused hands the message it
    holds back to the broker: the next consumer runs the event's next attempt."""
    app, proxy = broker_writes
    attempts = []

    def handler(payload, ctx):
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            proxy.cut()
            raise RuntimeError("first attempt fails")

    app.event_queue.subscribe("handover", process=handler)
    app.start()
    app.event_queue.publish("handover", 1, max_retries=1)
    wait_until(lambda: attempts == [1], what="the first attempt")
    stopped = threading.Thread(target=app.stop)
    stopped.start()
    stopped.join(30)
    assert not stopped.is_alive(), "stop() hung on the refused message"
    assert app.event_queue.stats("handover")["handover"]["pending"] == 1
    proxy.restore()
    successor = app.successor()
    successor.event_queue.subscribe("handover", process=handler)
    successor.start()
    wait_until(lambda: attempts == [1, 2], timeout=30, what="the next attempt")
    wait_until(
        lambda: successor.event_queue.stats("handover")["handover"]["succeeded"] == 1,
        what="the outcome",
    )
