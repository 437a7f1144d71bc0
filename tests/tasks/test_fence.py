"""The fenced writes of an attempt (mega_cluster.tasks.store.Fence) on the
database transport, on SQLite (a transaction each) and PostgreSQL (one statement
each, composed with the event's): the start and the success are written only for
the attempt that holds its event, and a success is all or nothing — the result
row and the event's completion together, or neither. On PostgreSQL the claim
itself starts the row (its claim hook): an attempt's start costs no statement."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connections
from django.test import override_settings
from django.utils import timezone

from mega_cluster.events import EventContext
from mega_cluster.models import QueuedEvent, TaskRun
from mega_cluster.registry import ClusterApp, registry
from mega_cluster.tasks.store import Fence, LeaseLost, StartOnClaim, one_statement
from mega_cluster.testing import cluster_settings
from tests.events.conftest import ON_POSTGRES

from . import jobs
from .conftest import tasks_setting

DATABASES = [
    pytest.param("default", id="sqlite", marks=pytest.mark.django_db(transaction=True)),
    pytest.param("postgres", id="postgresql", marks=ON_POSTGRES),
]


@pytest.fixture(params=DATABASES)
def app(request: pytest.FixtureRequest, unique_name: str) -> Iterator[ClusterApp]:
    """A started app on the database queue that does not consume: the test plays
    the worker."""
    queue = {
        "BACKEND": "database",
        "LEASE": 30.0,
        "OPTIONS": {"DATABASE": request.param},
    }
    with (
        cluster_settings({"APP_NAME": unique_name, "EVENT_QUEUE": queue}),
        override_settings(TASKS=tasks_setting()),
    ):
        app = registry.get()
        app.event_queue.consume = False
        app.start()
        try:
            yield app
        finally:
            app.stop()


def _on_postgres(app: ClusterApp) -> bool:
    return connections[app.event_queue.backend.transaction_alias()].vendor == (
        "postgresql"
    )


def _claimed(app: ClusterApp, before_claim=None) -> Fence:
    """Enqueue a task, claim its event as a worker does: the attempt's fence."""
    result = jobs.calculate_meaning_of_life.enqueue()
    events = app.event_queue.backend
    if before_claim is not None:
        before_claim(result.id)
    (claimed,) = events.claim("tasks.default", 1, lease=30.0)
    assert claimed.id == result.id
    ctx = EventContext(id=claimed.id, channel=claimed.channel, attempt=claimed.attempt)
    return Fence(
        events=events,
        alias=events.transaction_alias(),
        id=ctx.id,
        attempt=ctx.attempt,
        lease=30.0,
    )


def _event(fence: Fence) -> QueuedEvent:
    return QueuedEvent.objects.using(fence.alias).get(id=fence.id)


def _row(fence: Fence) -> TaskRun:
    return TaskRun.objects.using(fence.alias).get(id=fence.id)


def test_claim_starts_the_row_on_postgresql(app: ClusterApp):
    fence = _claimed(app)
    row = _row(fence)
    if _on_postgres(app):
        assert (row.status, row.attempt, row.worker_ids) == (
            "RUNNING",
            1,
            [app.node_id],
        )
        assert row.enqueued_at <= row.started_at == row.last_attempted_at
    else:  # the handler's start writes it
        assert (row.status, row.attempt, row.worker_ids) == ("READY", 0, [])


def test_claim_does_not_start_a_finished_task(app: ClusterApp):
    alias = app.event_queue.backend.transaction_alias()

    def succeeded(task_id: str) -> None:
        TaskRun.objects.using(alias).filter(id=task_id).update(status="SUCCESSFUL")

    fence = _claimed(app, before_claim=succeeded)
    row = _row(fence)
    assert (row.status, row.attempt, row.worker_ids) == ("SUCCESSFUL", 0, [])
    assert fence.start("node-a") is None


def test_start_and_success(app: ClusterApp):
    fence = _claimed(app)
    started = fence.start("node-a")
    assert started is not None
    claimed_by = [app.node_id] if _on_postgres(app) else []
    assert (started.status, started.attempt, started.worker_ids) == (
        "RUNNING",
        1,
        [*claimed_by, "node-a"],
    )
    assert started.started_at is not None and started.args == []
    assert _row(fence).status == "RUNNING"
    row, settled = fence.succeed({"answer": [4, 2]})
    assert row.status == "SUCCESSFUL" and row.return_value == {"answer": [4, 2]}
    assert row.finished_at is not None
    assert _row(fence).return_value == {"answer": [4, 2]}
    # On PostgreSQL the event is completed by the same statement; elsewhere the
    # event queue completes it after the handler returned.
    assert settled is one_statement(fence.events)
    assert settled is (connections[fence.alias].vendor == "postgresql")
    assert _event(fence).status == ("succeeded" if settled else "running")


def test_success_of_an_attempt_that_lost_its_row_writes_nothing(app: ClusterApp):
    """Another attempt took the row (its number moved on): the success is refused
    and the event stays running — not completed without its result."""
    fence = _claimed(app)
    assert fence.start("node-a") is not None
    TaskRun.objects.using(fence.alias).filter(id=fence.id).update(attempt=2)
    with pytest.raises(LeaseLost):
        fence.succeed(7)
    assert _row(fence).status == "RUNNING" and _row(fence).return_value is None
    assert _event(fence).status == "running"


def test_lapsed_lease_refuses_start_and_success(app: ClusterApp):
    fence = _claimed(app)
    assert fence.start("node-a") is not None
    QueuedEvent.objects.using(fence.alias).filter(id=fence.id).update(
        lease_expires_at=0.0
    )
    with pytest.raises(LeaseLost):
        fence.succeed(7)
    assert _row(fence).status == "RUNNING"
    assert _event(fence).status == "running"
    assert fence.start("node-b") is None  # nor can it start again
    assert _row(fence).worker_ids[-1] == "node-a"


def test_start_of_a_finished_task_runs_nothing(app: ClusterApp):
    fence = _claimed(app)
    TaskRun.objects.using(fence.alias).filter(id=fence.id).update(status="SUCCESSFUL")
    assert fence.start("node-a") is None
    assert "node-a" not in _row(fence).worker_ids


def test_a_claim_built_before_the_task_was_due_starts_it_no_earlier(app: ClusterApp):
    """The claim's statement is built before it runs, and may take a task that
    became due in between: its start is never recorded before its run_after (nor
    its enqueue)."""
    if not _on_postgres(app):
        pytest.skip("the claim starts rows on PostgreSQL only")
    when = timezone.now() + timedelta(seconds=0.3)
    result = jobs.noop_task.using(run_after=when).enqueue()
    events = app.event_queue.backend
    hook = StartOnClaim(events.transaction_alias(), "node-x")
    sql, params = events.hooked_claim_statement(
        "tasks.default", 1, lease=30.0, hook=hook
    )
    time.sleep(0.5)  # due now, by every clock
    assert events.run_statement(sql, params)
    row = TaskRun.objects.using(events.transaction_alias()).get(id=result.id)
    assert row.status == "RUNNING" and row.worker_ids == ["node-x"]
    assert row.started_at >= when and row.last_attempted_at >= when
