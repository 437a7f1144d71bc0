"""async_tasks: tasks on the event queue with progress in the database, an idle
gate, cancellation broadcast over pub/sub, retries and dead letters.

Two nodes of the testing kit: "web" only publishes (``CONSUME`` off), "worker"
consumes, like a web node and a ``runworker``; the test runs the events. The
same plugin across real processes is in tests/cluster/test_plugin_async_tasks.py.
"""

from __future__ import annotations

import threading

import pytest

from mega_cluster.testing import wait_until
from plugins.async_tasks.models import Task
from plugins.async_tasks.plugin import CHANNEL, TaskNotFound

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def pair(cluster, settings):
    settings.ASYNC_TASKS_CONCURRENCY = 1
    cluster.configure(plugins=["async_tasks"])
    cluster(
        ["web", "worker"], node_settings={"web": {"EVENT_QUEUE": {"CONSUME": False}}}
    )
    return cluster.plugins("async_tasks")


def test_task_runs_on_the_consuming_node_with_progress(cluster, pair):
    web, _ = pair
    task = web.start_task("count", {"steps": 3, "delay": 0})
    assert [a.node for a in cluster.run_events()] == ["worker"]
    done = Task.objects.get(pk=task.pk)
    assert (done.status, done.node_id, done.attempts) == ("succeeded", "worker", 1)
    assert (done.progress_done, done.progress_total, done.percent) == (3, 3, 100)
    assert done.result == {"counted": 3}
    assert web.event_queue.stats(CHANNEL)[CHANNEL]["succeeded"] == 1


def test_cancel_from_the_publishing_node_stops_the_running_task(cluster, pair):
    """Cancelled on web, the task running on worker (5 s per step) stops at the
    broadcast, not at its next database write."""
    web, worker = pair
    task = web.start_task("count", {"steps": 1000, "delay": 5})
    runner = threading.Thread(target=cluster.run_events)
    runner.start()
    try:
        wait_until(
            lambda: Task.objects.filter(pk=task.pk, status="running").exists(),
            5,
            "the task to run",
        )
        assert web.cancel(str(task.pk)) == "running"
        cluster.assert_published(web, "async_tasks.cancel", {"task": str(task.pk)})
        cluster.deliver()
    finally:
        runner.join(5)
    assert not runner.is_alive()
    done = Task.objects.get(pk=task.pk)
    assert (done.status, done.message) == ("cancelled", "cancelled (broadcast)")
    assert list(worker.cancel_log) == [(str(task.pk), "broadcast")]
    assert web.cancel(str(task.pk)) == "cancelled"  # finished: left as it is


def test_queued_task_is_cancelled_before_it_runs(cluster, pair):
    """While the queue is paused (idle gate closed) a task waits; cancelled, it
    never runs after the queue resumes."""
    web, worker = pair
    web.set_paused(True)
    cluster.deliver()
    assert worker.paused
    task = web.start_task("count", {"steps": 1, "delay": 0})
    assert cluster.run_events() == []  # the gate keeps it queued
    assert a_status(task) == "queued"
    assert web.cancel(str(task.pk)) == "cancelled"
    web.set_paused(False)
    cluster.deliver()
    later = web.start_task("count", {"steps": 1, "delay": 0})
    assert [a.outcome for a in cluster.run_events()] == ["succeeded"] * 2
    assert a_status(later) == "succeeded"
    cancelled = Task.objects.get(pk=task.pk)
    assert (cancelled.status, cancelled.attempts) == ("cancelled", 0)


def a_status(task):
    return Task.objects.get(pk=task.pk).status


def test_concurrency_runs_one_task_at_a_time(cluster, settings):
    """ASYNC_TASKS_CONCURRENCY = 1 on the database queue with its real consumer
    thread: the second task starts after the first ends."""
    settings.ASYNC_TASKS_CONCURRENCY = 1
    cluster.configure(
        plugins=["async_tasks"],
        settings={"EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05}},
    )
    cluster(
        ["web", "worker"], node_settings={"web": {"EVENT_QUEUE": {"CONSUME": False}}}
    )
    web, _ = cluster.plugins("async_tasks")
    first = web.start_task("count", {"steps": 3, "delay": 0.05})
    second = web.start_task("count", {"steps": 3, "delay": 0.05})
    wait_until(
        lambda: Task.objects.filter(status="succeeded").count() == 2, 10, "both tasks"
    )
    one, two = Task.objects.get(pk=first.pk), Task.objects.get(pk=second.pk)
    ordered = sorted([one, two], key=lambda t: t.started_at)
    assert ordered[0].finished_at <= ordered[1].started_at
    assert {one.node_id, two.node_id} == {"worker"}


def test_failed_attempts_are_retried_then_dead_lettered(cluster, pair):
    web, _ = pair
    flaky = web.start_task("flaky", {"fail_times": 1}, max_retries=1)
    broken = web.start_task("fail", {"error": "disk full"}, max_retries=1)
    attempts = cluster.run_events(advance=True)
    assert sorted((a.attempt, a.outcome) for a in attempts) == [
        (1, "retry"),
        (1, "retry"),
        (2, "dead"),
        (2, "succeeded"),
    ]
    done = Task.objects.get(pk=flaky.pk)
    assert (done.attempts, done.result) == (2, {"succeeded_on_attempt": 2})
    dead = Task.objects.get(pk=broken.pk)
    assert (dead.status, dead.attempts) == ("dead", 2)
    assert "disk full" in dead.error
    (letter,) = web.event_queue.dead_letters(CHANNEL)
    assert (letter.id, letter.attempts) == (dead.event_id, 2)


def test_disabled_it_takes_no_task_and_enabled_again_it_does(cluster, pair):
    """Disabling unsubscribes the queue on every node; enabling subscribes it
    again (it raised AlreadySubscribed before after_disable unsubscribed)."""
    web, _ = pair
    web.app.disable_plugin("async_tasks")
    cluster.deliver()
    task = web.start_task("count", {"steps": 1, "delay": 0})
    assert cluster.run_events() == []
    web.app.enable_plugin("async_tasks")
    cluster.deliver()
    assert [a.node for a in cluster.run_events()] == ["worker"]
    assert a_status(task) == "succeeded"


def test_bad_input_queues_nothing(cluster, pair):
    web, _ = pair
    with pytest.raises(ValueError, match="Unknown task kind 'nope'"):
        web.start_task("nope")
    with pytest.raises(ValueError, match="steps must be between"):
        web.start_task("count", {"steps": 0})
    with pytest.raises(ValueError, match="delay must be a number"):
        web.start_task("count", {"delay": "soon"})
    assert not Task.objects.exists()
    assert cluster.events.pending() == []
    with pytest.raises(TaskNotFound):
        web.cancel("6d1f2b3c-0000-4000-8000-000000000000")
    with pytest.raises(TaskNotFound):
        web.cancel("not-a-uuid")
