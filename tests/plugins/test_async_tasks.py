"""async_tasks: tasks on the event queue with progress in the database, an idle
gate, cancellation broadcast over pub/sub, retries and dead letters.

Node A only publishes (``CONSUME`` off), node B consumes, like a web node and a
worker.
"""

from __future__ import annotations

import time

import pytest

from plugins.async_tasks.models import Task
from plugins.async_tasks.plugin import CHANNEL, AsyncTasksPlugin, TaskNotFound

from .conftest import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pair(nodes, settings):
    settings.ASYNC_TASKS_CONCURRENCY = 1
    return nodes(
        AsyncTasksPlugin,
        "async_tasks",
        a={"EVENT_QUEUE": {"CONSUME": False}},
        b={"EVENT_QUEUE": {"RETRY_CAP": 0.1}},
    )


def status(task, *statuses, timeout=10.0):
    return wait_until(
        lambda: Task.objects.filter(pk=task.pk, status__in=statuses).first(),
        timeout,
        f"task {task.kind} to be {'/'.join(statuses)}",
    )


def test_task_runs_on_the_consuming_node_with_progress(pair):
    a, _ = pair
    task = a.start_task("count", {"steps": 3, "delay": 0.01})
    done = status(task, "succeeded")
    assert done.node_id == "node-b"
    assert (done.progress_done, done.progress_total, done.percent) == (3, 3, 100)
    assert done.result == {"counted": 3}
    assert done.attempts == 1
    wait_until(
        lambda: a.event_queue.stats(CHANNEL)[CHANNEL]["succeeded"] == 1,
        5,
        "the queue to count the event as succeeded",
    )


def test_cancel_from_the_publishing_node_stops_the_running_task(pair):
    """Cancelled on node A, the task running on node B (5 s per step) stops
    within 2 s, told by the pub/sub broadcast (not by its next database write)."""
    a, b = pair
    task = a.start_task("count", {"steps": 1000, "delay": 5})
    running = status(task, "running")
    assert running.node_id == "node-b"
    started = time.monotonic()
    assert a.cancel(str(task.pk)) == "running"
    done = status(task, "cancelled", timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert done.message == "cancelled (broadcast)"
    assert list(b.cancel_log) == [(str(task.pk), "broadcast")]
    assert a.cancel(str(task.pk)) == "cancelled"  # finished: left as it is


def test_queued_task_is_cancelled_before_it_runs(pair):
    """While the queue is paused (idle gate closed) a task waits; cancelled, it
    never runs after the queue resumes."""
    a, b = pair
    a.set_paused(True)
    wait_until(lambda: b.paused, 1.0, "node B to see the pause")
    task = a.start_task("count", {"steps": 1, "delay": 0})
    time.sleep(0.4)  # several poll intervals: the gate keeps it queued
    assert Task.objects.get(pk=task.pk).status == "queued"
    assert a.cancel(str(task.pk)) == "cancelled"
    a.set_paused(False)
    wait_until(lambda: not b.paused, 1.0, "node B to see the resume")
    later = a.start_task("count", {"steps": 1, "delay": 0})
    status(later, "succeeded")
    cancelled = Task.objects.get(pk=task.pk)
    assert (cancelled.status, cancelled.attempts) == ("cancelled", 0)


def test_concurrency_runs_one_task_at_a_time(pair):
    """ASYNC_TASKS_CONCURRENCY = 1: the second task starts after the first ends."""
    a, _ = pair
    first = a.start_task("count", {"steps": 3, "delay": 0.05})
    second = a.start_task("count", {"steps": 3, "delay": 0.05})
    one, two = status(first, "succeeded"), status(second, "succeeded")
    ordered = sorted([one, two], key=lambda t: t.started_at)
    assert ordered[0].finished_at <= ordered[1].started_at


def test_failed_attempts_are_retried_then_dead_lettered(pair):
    a, _ = pair
    flaky = a.start_task("flaky", {"fail_times": 1}, max_retries=1)
    done = status(flaky, "succeeded")
    assert done.attempts == 2
    assert done.result == {"succeeded_on_attempt": 2}
    broken = a.start_task("fail", {"error": "disk full"}, max_retries=1)
    dead = status(broken, "dead")
    assert dead.attempts == 2
    assert "disk full" in dead.error
    letters = wait_until(
        lambda: [
            d for d in a.event_queue.dead_letters(CHANNEL) if d.id == dead.event_id
        ],
        5,
        "the dead letter",
    )
    assert letters[0].attempts == 2


def test_bad_input_queues_nothing(pair):
    a, _ = pair
    with pytest.raises(ValueError, match="Unknown task kind 'nope'"):
        a.start_task("nope")
    with pytest.raises(ValueError, match="steps must be between"):
        a.start_task("count", {"steps": 0})
    with pytest.raises(ValueError, match="delay must be a number"):
        a.start_task("count", {"delay": "soon"})
    assert not Task.objects.exists()
    with pytest.raises(TaskNotFound):
        a.cancel("6d1f2b3c-0000-4000-8000-000000000000")
    with pytest.raises(TaskNotFound):
        a.cancel("not-a-uuid")
