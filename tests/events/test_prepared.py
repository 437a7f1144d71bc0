"""The ``database`` event queue runs its statements prepared on PostgreSQL
(``events/backends/prepared.py``): on the caller's connection and transaction,
never through a pooler, not while Django counts queries, off with
``OPTIONS["PREPARE"] = False``, and back to unprepared when a migration changes a
column a prepared statement returns."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.transaction import TransactionManagementError
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from mega_cluster.checks import check_settings
from mega_cluster.events.backends import prepared
from mega_cluster.models import QueuedEvent
from mega_cluster.testing import make_app

from .conftest import PGBOUNCER, queue_settings

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, databases=["default", "postgres"]),
]


def _prepared_here() -> list[str]:
    """The statements prepared on this thread's ``postgres`` session that touch
    the event table."""
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall() if "mega_cluster_event" in row[0]]


@pytest.fixture
def queue(unique_name):
    apps = []

    def make(**options):
        settings = queue_settings("database", "postgres", CONSUME=False)
        settings["EVENT_QUEUE"]["OPTIONS"].update(options)
        app = make_app(unique_name, settings)
        apps.append(app)
        return app.event_queue

    yield make
    for app in apps:
        app.stop()
    connections["postgres"].close()  # its prepared statements go with it


def test_statements_run_prepared_on_the_callers_connection(queue):
    events = queue()
    assert events.backend.prepares is True
    ids = [events.publish("jobs", {"n": n}) for n in range(3)]
    claimed = events.backend.claim("jobs", 8, lease=30)
    assert sorted(e.id for e in claimed) == sorted(ids)
    statements = _prepared_here()
    assert any("INSERT INTO" in s and "pg_notify" in s for s in statements)
    assert any(s.startswith("UPDATE") and "SKIP LOCKED" in s for s in statements)
    # prepared once, not once per call: one enqueue statement for three publishes
    assert sum("INSERT INTO" in s for s in statements) == 1
    # Django's own setting is left as it was (no preparing for the ORM's queries)
    assert connections["postgres"].connection.prepare_threshold is None
    QueuedEvent.objects.using("postgres").filter(id__in=ids).count()
    assert connections["postgres"].connection.prepare_threshold is None


def test_a_rolled_back_transaction_keeps_nothing(queue):
    events = queue()
    with pytest.raises(RuntimeError), transaction.atomic(using="postgres"):
        event_id = events.publish("jobs", "gone")
        assert QueuedEvent.objects.using("postgres").filter(id=event_id).exists()
        assert _prepared_here()  # it ran prepared, in the transaction
        raise RuntimeError("roll back")
    assert not QueuedEvent.objects.using("postgres").filter(id=event_id).exists()
    # and the next publish, outside, is stored
    kept = events.publish("jobs", "kept")
    assert QueuedEvent.objects.using("postgres").filter(id=kept).exists()


def test_a_broken_transaction_refuses_the_statement_as_django_does(queue):
    events = queue()
    with transaction.atomic(using="postgres"):
        try:
            # an inner block without a savepoint that fails: the outer one can
            # only roll back now (Django's needs_rollback)
            with transaction.atomic(using="postgres", savepoint=False):
                with connections["postgres"].cursor() as cursor:
                    cursor.execute("SELECT 1 / 0")
        except DatabaseError:
            pass
        with pytest.raises(TransactionManagementError):
            events.publish("jobs", "after the error")


def test_counted_queries_go_through_djangos_cursor(queue):
    events = queue()
    with CaptureQueriesContext(connections["postgres"]) as captured:
        events.publish("jobs", "seen")
    assert any("mega_cluster_event" in q["sql"] for q in captured.captured_queries)
    assert not _prepared_here()


def test_prepare_false_runs_unprepared(queue):
    events = queue(PREPARE=False)
    assert events.backend.prepares is False
    events.publish("jobs", "plain")
    assert events.backend.claim("jobs", 8, lease=30)
    assert not _prepared_here()


def test_a_pooled_alias_never_prepares():
    """An alias marked as going through a transaction pooler (the contract suite
    runs on a real PgBouncer there: ``database-pgbouncer``) never prepares."""
    assert prepared.usable("postgres", {}) is True
    assert prepared.usable("postgres", {"PREPARE": False}) is False
    assert prepared.usable("default", {}) is False  # SQLite
    pooled = {**settings.DATABASES["postgres"], "DISABLE_SERVER_SIDE_CURSORS": True}
    with override_settings(DATABASES={**settings.DATABASES, PGBOUNCER: pooled}):
        assert prepared.usable(PGBOUNCER, {}) is False


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_prepare_must_be_a_bool(unique_name, value):
    settings = queue_settings("database", "postgres")
    settings["EVENT_QUEUE"]["OPTIONS"]["PREPARE"] = value
    with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **settings}):
        messages = check_settings()
    assert any(
        m.id == "mega_cluster.E012" and "OPTIONS['PREPARE']" in m.msg for m in messages
    ), messages


def test_a_migration_that_changes_a_returned_column_falls_back(queue, caplog):
    """A column the claim returns changes type (as a deploy's migration would,
    while workers run): the prepared claim is refused by PostgreSQL; the backend
    runs it again unprepared and stays unprepared."""
    events = queue()
    first = events.publish("jobs", "one")
    assert [e.id for e in events.backend.claim("jobs", 8, lease=30)] == [first]
    second = events.publish("jobs", "two")
    table = "mega_cluster_event"
    alter = f"ALTER TABLE {table} ALTER COLUMN channel TYPE varchar(%s)"
    other = connections.create_connection("postgres")
    try:
        with other.cursor() as cursor:
            cursor.execute(alter % 201)
        claimed = events.backend.claim("jobs", 8, lease=30)
        assert [e.id for e in claimed] == [second]
        assert events.backend.prepares is False
        assert "result type changed" in caplog.text
        third = events.publish("jobs", "three")
        assert [e.id for e in events.backend.claim("jobs", 8, lease=30)] == [third]
    finally:
        connections["postgres"].close()
        with other.cursor() as cursor:
            cursor.execute(alter % 200)
        other.close()
