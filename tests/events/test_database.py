"""Database-backend extras: leases, lost attempts, notifications, settings checks."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.db import connections
from django.test import override_settings

from mega_cluster.checks import check_settings
from mega_cluster.exceptions import ConfigurationError
from mega_cluster.models import QueuedEvent
from mega_cluster.testing import make_app
from tests.databases import DATABASES
from tests.factories import QueuedEventFactory

from .conftest import queue_settings, wait_until


@pytest.fixture(params=DATABASES)
def make(request, unique_name):
    built = []

    def make(**overrides):
        app = make_app(
            unique_name, queue_settings("database", request.param, **overrides)
        )
        built.append(app)
        return app

    make.alias = request.param
    yield make
    for app in built:
        app.stop()


def test_lapsed_lease_is_redelivered_and_counts_the_lost_attempt(make):
    """An event claimed by a worker that never finishes is run again after its
    lease lapses, as attempt 2."""
    dead_worker = make()
    event_id = dead_worker.event_queue.publish("jobs", 1, max_retries=1)
    [claimed] = dead_worker.event_queue.backend.claim("jobs", 10, lease=0.3)
    assert claimed.attempt == 1
    app = make()
    seen = []
    app.event_queue.subscribe("jobs", process=lambda p, ctx: seen.append(ctx.attempt))
    app.start()
    wait_until(lambda: seen, what="the redelivered event")
    assert seen == [2]
    rows = QueuedEvent.objects.using(make.alias).filter(id=event_id)
    wait_until(lambda: rows.get().status == "succeeded", what="success recorded")
    assert rows.get().attempts == 2


def test_a_dead_letter_row_is_listed_and_runs_again_after_retry(make):
    """A dead-lettered row is listed with its payload and last error; retry_dead
    runs it again from attempt 1."""
    app = make()
    event = QueuedEventFactory(
        using=make.alias,
        app_name=app.name,
        channel="jobs",
        status=QueuedEvent.DEAD,
        attempts=1,
        failures=1,
        last_error="ValueError: boom",
        finished_at=time.time(),
        data={"order": 7},
    )
    [dead] = app.event_queue.dead_letters("jobs")
    assert (dead.id, dead.payload, dead.error) == (
        event.id,
        {"order": 7},
        "ValueError: boom",
    )
    seen = []
    app.event_queue.subscribe(
        "jobs", process=lambda p, ctx: seen.append((p, ctx.attempt))
    )
    app.start()
    app.event_queue.retry_dead(event.id)
    wait_until(lambda: seen, what="the retried event")
    assert seen == [({"order": 7}, 1)]
    assert app.event_queue.dead_letters("jobs") == []


def test_lost_attempts_use_up_the_budget(make):
    """When the lost attempt was the last allowed one the event is dead-lettered
    without running again."""
    dead_worker = make()
    event_id = dead_worker.event_queue.publish("jobs", 1)  # max_retries=0
    dead_worker.event_queue.backend.claim("jobs", 10, lease=0.2)
    app = make()
    seen = []
    app.event_queue.subscribe("jobs", process=lambda p, ctx: seen.append(ctx.attempt))
    app.start()
    wait_until(lambda: app.event_queue.dead_letters("jobs"), what="the dead letter")
    [dead] = app.event_queue.dead_letters("jobs")
    assert dead.id == event_id and "lost" in dead.error
    assert seen == []


def test_renewed_lease_prevents_redelivery(make):
    """A handler running longer than the lease keeps its event: no second attempt."""
    app = make(LEASE=0.3)
    other = make(LEASE=0.3)
    release = threading.Event()
    attempts = []

    def slow(payload, ctx):
        attempts.append(ctx.attempt)
        release.wait(10)

    app.event_queue.subscribe("jobs", process=slow)
    app.start()
    app.event_queue.publish("jobs", 1)
    wait_until(lambda: attempts)
    other.event_queue.subscribe("jobs", process=slow)
    other.start()
    time.sleep(1.0)  # more than three leases
    release.set()
    wait_until(lambda: app.event_queue.stats("jobs")["jobs"]["succeeded"] == 1)
    assert attempts == [1]


def test_prune_forgets_old_succeeded_events_and_keeps_their_counts(make):
    """prune(retention) deletes succeeded events finished longer ago than that, in
    batches, and adds them to the channel's tally: stats() are the same before and
    after, and a second prune changes nothing. Dead letters, pending and recent
    events stay."""
    from mega_cluster.events.backends import database_ops

    app = make(RETENTION=None)  # the consumer prunes nothing by itself
    now = time.time()

    def event(status, finished_ago, failures=0, channel="jobs"):
        return QueuedEventFactory(
            using=make.alias,
            app_name=app.name,
            channel=channel,
            status=status,
            attempts=1 + failures,
            failures=failures,
            finished_at=None if finished_ago is None else now - finished_ago,
        )

    old = [event(QueuedEvent.SUCCEEDED, 100, failures=i % 2) for i in range(5)]
    old.append(event(QueuedEvent.SUCCEEDED, 100, channel="other"))
    kept = [
        event(QueuedEvent.SUCCEEDED, 1),
        event(QueuedEvent.DEAD, 100, failures=1),
        event(QueuedEvent.PENDING, None),
    ]
    before = app.event_queue.stats()
    backend = app.event_queue.backend
    batch = database_ops.PRUNE_BATCH
    database_ops.PRUNE_BATCH = 2  # several batches
    try:
        assert backend.prune(60) == len(old)
    finally:
        database_ops.PRUNE_BATCH = batch
    assert app.event_queue.stats() == before
    assert before["jobs"]["succeeded"] == 6 and before["jobs"]["failed"] == 3
    remaining = set(
        QueuedEvent.objects.using(make.alias)
        .filter(app_name=app.name)
        .values_list("id", flat=True)
    )
    assert remaining == {e.id for e in kept}
    assert backend.prune(60) == 0
    assert app.event_queue.stats() == before


def _history(alias: str, app_name: str, n: int) -> None:
    """``n`` finished events of channel ``jobs``: the history a live table keeps."""
    now = time.time()
    QueuedEvent.objects.using(alias).bulk_create(
        QueuedEvent(
            id=f"done{i}",
            app_name=app_name,
            channel="jobs",
            payload="1",
            status=QueuedEvent.SUCCEEDED if i % 10 else QueuedEvent.DEAD,
            attempts=1,
            available_at=now - 60,
            finished_at=now - 30,
        )
        for i in range(n)
    )


def _table_reads(alias: str, sql: str, params: list) -> list[str]:
    """How the statement reads the event table, one line per scan: PostgreSQL's
    executed plan (index condition, rows read and thrown away) or SQLite's query
    plan. Run in a transaction that is rolled back."""
    from django.db import connections, transaction

    connection = connections[alias]
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The table is small: make the planner show what an index can do.
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            found = []

            def walk(node):
                scan = node["Node Type"].endswith("Scan")
                if scan and node.get("Relation Name") == "mega_cluster_event":
                    found.append(
                        f"{node.get('Index Cond', 'no index condition')} "
                        f"removed={node.get('Rows Removed by Filter', 0)}"
                    )
                for child in node.get("Plans", []):
                    walk(child)

            walk(plan[0]["Plan"])
        else:
            cursor.execute("EXPLAIN QUERY PLAN " + sql, params)
            found = [
                row[-1] for row in cursor.fetchall() if "mega_cluster_event" in row[-1]
            ]
        transaction.set_rollback(True, using=alias)
    return found


def test_claiming_reads_only_claimable_rows_not_the_history(make):
    """The claim and the next-due lookup use index ranges of pending and running
    events: the finished events a table accumulates are not read on every claim
    (asked as one OR, they were, and claiming slowed down as the table grew)."""
    app = make()
    _history(make.alias, app.name, 400)
    event_id = app.event_queue.publish("jobs", 1)
    backend = app.event_queue.backend
    statements = {
        "claim": backend.claim_statement("jobs", 8, lease=30),
        "next_due": backend.next_due_statement("jobs"),
    }
    for what, (sql, params) in statements.items():
        reads = _table_reads(make.alias, sql, params)
        assert reads, what
        for read in reads:
            if "postgres" in make.alias:
                assert "status" in read or "(id)::text" in read, (what, reads)
                assert read.endswith("removed=0"), (what, reads)
            else:
                assert "status=?" in read or "(id=?)" in read, (what, reads)
    # and the statements still do their job
    assert [e.id for e in backend.claim("jobs", 8, lease=30)] == [event_id]
    assert backend.next_due("jobs") is not None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_postgres_notify_wakes_another_node(unique_name):
    """A publish from another node wakes the consumer through LISTEN/NOTIFY, not a
    poll (the poll interval is 30 s)."""
    consumer = make_app(
        unique_name, queue_settings("database", "postgres", POLL_INTERVAL=30.0)
    )
    publisher = make_app(unique_name, queue_settings("database", "postgres"))
    try:
        seen = []
        consumer.event_queue.subscribe("jobs", process=lambda p, c: seen.append(p))
        consumer.start()
        time.sleep(0.5)  # the pull loop is now asleep, LISTEN is established
        publisher.event_queue.publish("jobs", "hello")
        wait_until(lambda: seen, timeout=5, what="the notified event")
        assert seen == ["hello"]
    finally:
        consumer.stop()
        publisher.stop()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_postgres_only_consuming_nodes_listen(unique_name):
    """A node that only publishes (a web node: CONSUME off) holds no LISTEN session,
    so it is not sent, and does not answer, every NOTIFY of the cluster; a consumer
    listens from its start until it stops, and one added later still wakes."""
    publisher = make_app(
        unique_name, queue_settings("database", "postgres", CONSUME=False)
    )
    consumer = make_app(
        unique_name, queue_settings("database", "postgres", POLL_INTERVAL=30.0)
    )

    def listening() -> int:
        with connections["postgres"].cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query = %s",
                [f'LISTEN "mc_events_{unique_name}"'],
            )
            return cursor.fetchone()[0]

    try:
        publisher.start()
        publisher.event_queue.publish("jobs", "before")  # builds and starts it
        backend = publisher.event_queue.backend
        assert backend.listener_running is False
        time.sleep(0.3)
        assert listening() == 0
        seen: list[str] = []
        consumer.event_queue.subscribe("jobs", process=lambda p, c: seen.append(p))
        consumer.start()
        assert consumer.event_queue.backend.listener_running is True
        wait_until(lambda: listening() == 1, timeout=5, what="the consumer's LISTEN")
        wait_until(lambda: seen == ["before"], timeout=5, what="the first event")
        time.sleep(0.3)  # asleep: a 30 s poll, so only the NOTIFY can wake it
        publisher.event_queue.publish("jobs", "after")
        wait_until(lambda: seen == ["before", "after"], timeout=5, what="NOTIFY")
        assert backend.listener_running is False
        consumer.stop()
        assert consumer.event_queue.backend.listener_running is False
    finally:
        consumer.stop()
        publisher.stop()


def test_unknown_database_alias_is_a_configuration_error(unique_name):
    """OPTIONS['DATABASE'] must be a DATABASES alias: check error and at build time."""
    settings = {"EVENT_QUEUE": {"BACKEND": "database", "OPTIONS": {"DATABASE": "nope"}}}
    app = make_app(unique_name, settings)
    with pytest.raises(
        ConfigurationError, match="'nope', which is not a DATABASES alias"
    ):
        app.event_queue  # noqa: B018
    with override_settings(MEGA_CLUSTER={"APP_NAME": unique_name, **settings}):
        messages = check_settings()
    assert any(m.id == "mega_cluster.E012" and "DATABASE" in m.msg for m in messages), (
        messages
    )
