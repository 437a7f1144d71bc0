"""Celery backend: events whose messages a broker restart lost are sent again.

Redis without persistence (the test's own ``redis-server`` on a free port, never the
shared one) forgets its queues when it restarts; the events' rows in the store still
say ``pending``. A consuming node notices events due longer than ``RESEND_AFTER``
while their channel's broker queue is empty, and sends them again.
"""

from __future__ import annotations

import logging

import pytest

from mega_cluster.checks import check_settings
from mega_cluster.exceptions import ConfigurationError
from mega_cluster.testing import make_app

from .conftest import FAST, wait_until

pytestmark = [
    pytest.mark.celery,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]


def _section(port: int, **options) -> dict:
    return {
        "EVENT_QUEUE": {
            "BACKEND": "celery",
            "OPTIONS": {
                "BROKER_URL": f"redis://127.0.0.1:{port}/0",
                "DATABASE": "postgres",
                **options,
            },
            **FAST,
        }
    }


def test_events_lost_in_a_broker_restart_are_sent_again(unique_name, caplog):
    from tests.servers import redis_server

    with redis_server() as broker:
        publisher = make_app(unique_name, _section(broker.port, RESEND_AFTER=0.5))
        consumer = make_app(unique_name, _section(broker.port, RESEND_AFTER=0.5))
        seen: list[int] = []
        try:
            ids = [publisher.event_queue.publish("mail", i) for i in range(3)]
            # the rows are written (the publisher's writer), the messages wait
            assert publisher.event_queue.stats("mail")["mail"]["pending"] == 3
            assert publisher.event_queue.backend.broker.queued("mail") == 3
            broker.restart()  # no persistence: the three messages are gone
            assert publisher.event_queue.backend.broker.queued("mail") == 0
            with caplog.at_level(logging.WARNING, "mega_cluster.events.celery"):
                consumer.event_queue.subscribe(
                    "mail", process=lambda payload, ctx: seen.append(payload)
                )
                consumer.start()
                wait_until(
                    lambda: sorted(seen) == [0, 1, 2],
                    timeout=30,
                    what="the lost events, sent again",
                )
                wait_until(
                    lambda: (
                        consumer.event_queue.stats("mail")["mail"]["succeeded"] == 3
                    ),
                    what="their outcomes",
                )
            assert sorted(seen) == [0, 1, 2]  # each ran once
            assert {e.id for e in consumer.event_queue.events("mail")} == set(ids)
            assert any("sent again" in r.getMessage() for r in caplog.records)
        finally:
            consumer.stop()
            publisher.stop()


def test_nothing_is_sent_again_while_the_broker_queue_holds_messages(unique_name):
    """Events waiting behind a backlog are not lost: while the channel's broker
    queue is not empty, nothing is sent again however old the pending rows are."""
    from tests.servers import redis_server

    with redis_server() as broker:
        app = make_app(unique_name, _section(broker.port, RESEND_AFTER=0.01))
        try:
            app.event_queue.publish("backlog", 1)
            app.event_queue.stats("backlog")  # the row is written
            wait_until(
                lambda: app.event_queue.backend.store.lost("backlog", 0.01),
                what="the event to count as overdue",
            )
            assert app.event_queue.backend.resend_lost("backlog") == 0
            assert app.event_queue.backend.broker.queued("backlog") == 1
        finally:
            app.stop()


def test_resend_after_must_be_positive_seconds_or_none(unique_name):
    from django.test import override_settings

    for bad in (0, -1, "1h", True):
        section = _section(6379, RESEND_AFTER=bad)
        with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **section}):
            messages = check_settings()
        assert any(
            m.id == "mega_cluster.E012" and "RESEND_AFTER" in m.msg for m in messages
        ), (bad, messages)
    section = _section(6379, RESEND_AFTER=None)
    with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **section}):
        assert not [m for m in check_settings() if "RESEND_AFTER" in m.msg]
    with pytest.raises(ConfigurationError, match=r"RESEND_AFTER'\] is 0"):
        make_app(unique_name, _section(6379, RESEND_AFTER=0)).event_queue  # noqa: B018
