"""The ``database`` event queue behind PgBouncer in transaction mode (the contract
suite runs there too, ``database-pgbouncer`` and ``celery-rabbitmq-pgbouncer``):
``LISTEN`` on the direct ``LISTEN_DATABASE`` alias, or polling without one."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings
from django.test import override_settings

from mega_cluster.checks import check_settings
from mega_cluster.events.backends.database import DatabaseEventBackend
from mega_cluster.testing import make_app

from .conftest import PGBOUNCER, wait_until


def _listeners(app_name: str) -> list[str]:
    """The event queue's LISTEN threads of app ``app_name``."""
    name = f"mc-events-listen-mc_events_{app_name}"
    return [t.name for t in threading.enumerate() if t.name == name]


@pytest.mark.parametrize(
    ("options", "listens"),
    [
        pytest.param({"DATABASE": PGBOUNCER, "LISTEN_DATABASE": "postgres"}, True),
        pytest.param({"DATABASE": PGBOUNCER}, False),
    ],
    ids=["direct-listen", "polling"],
)
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_another_node_publishing_through_the_pooler_wakes_the_consumer(
    unique_name, pgbouncer_alias, options, listens
):
    """With LISTEN_DATABASE the NOTIFY sent through PgBouncer reaches the direct
    LISTEN at once (the poll is 30 s); without it nothing listens through the
    pooler (it would hear nothing) and the consumer finds the event by polling."""
    poll = 30.0 if listens else 0.2
    section = {"BACKEND": "database", "POLL_INTERVAL": poll, "OPTIONS": options}
    consumer = make_app(unique_name, {"EVENT_QUEUE": section})
    publisher = make_app(unique_name, {"EVENT_QUEUE": section})
    try:
        seen: list[str] = []
        consumer.event_queue.subscribe("jobs", process=lambda p, c: seen.append(p))
        consumer.start()
        assert consumer.event_queue.backend.notifies is listens
        if listens:
            wait_until(lambda: _listeners(unique_name), what="the LISTEN thread")
            time.sleep(0.5)  # the pull loop is asleep, LISTEN is established
        else:
            assert _listeners(unique_name) == []
        publisher.event_queue.publish("jobs", "hello")
        wait_until(lambda: seen, timeout=10, what="the event")
        assert seen == ["hello"]
    finally:
        consumer.stop()
        publisher.stop()


def _pooled_databases() -> dict:
    pooled = {**settings.DATABASES["postgres"], "DISABLE_SERVER_SIDE_CURSORS": True}
    return {**settings.DATABASES, "pooled": pooled}


@pytest.mark.parametrize(
    ("options", "warned"),
    [
        ({"DATABASE": "pooled"}, True),
        ({"DATABASE": "pooled", "LISTEN_DATABASE": "postgres"}, False),
        ({"DATABASE": "postgres", "LISTEN_DATABASE": "pooled"}, True),
        ({"DATABASE": "postgres"}, False),
    ],
)
def test_event_queue_listen_through_a_transaction_pooler_is_w008(options, warned):
    value = {"EVENT_QUEUE": {"BACKEND": "database", "OPTIONS": options}}
    with override_settings(MEGA_CLUSTER=value, DATABASES=_pooled_databases()):
        found = [m for m in check_settings() if m.id == "mega_cluster.W008"]
    assert bool(found) == warned
    if warned:
        assert "EVENT_QUEUE" in found[0].msg and "'pooled'" in found[0].msg
        assert '["EVENT_QUEUE"]["OPTIONS"]["LISTEN_DATABASE"]' in found[0].hint


def test_an_unknown_listen_database_is_a_check_error():
    problems = DatabaseEventBackend.check_options({"LISTEN_DATABASE": "nope"})
    assert problems and "LISTEN_DATABASE" in problems[0] and "'nope'" in problems[0]
