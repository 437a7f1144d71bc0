"""The ``django.tasks`` contract of ``mega_cluster.tasks``, in the style of Django's
own ``tests/tasks``, on every event-queue transport (memory, database on SQLite and
PostgreSQL, Celery with its embedded worker on RabbitMQ)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.tasks import TaskResultStatus, default_task_backend, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.utils import timezone

from mega_cluster.tasks import ClusterTaskBackend, channel_for
from mega_cluster.testing import wait_until

from . import jobs


def finished(result, timeout: float = 60.0):
    """Wait (bounded) until the stored result is final; the refreshed result."""
    wait_until(
        lambda: default_task_backend.get_result(result.id).is_finished,
        timeout,
        what=f"task {result.task.name} to finish",
    )
    result.refresh()
    return result


def test_using_correct_backend(tasks_app):
    """TASKS builds a ClusterTaskBackend with the framework's capability flags."""
    backend = task_backends["default"]
    assert isinstance(backend, ClusterTaskBackend)
    assert (
        backend.supports_defer,
        backend.supports_async_task,
        backend.supports_get_result,
        backend.supports_priority,
    ) == (True, True, True, True)
    assert backend.check() == []


def test_enqueue_runs_and_stores_result(tasks_app):
    """enqueue returns a READY result at once; a worker runs it; the stored result
    has the return value, times in order and this node's worker id."""
    for task in (jobs.calculate_meaning_of_life, jobs.add_async.using()):
        args = () if task is jobs.calculate_meaning_of_life else (40, 2)
        result = task.enqueue(*args)
        assert result.status in (TaskResultStatus.READY, TaskResultStatus.RUNNING)
        assert result.enqueued_at is not None
        assert result.task == task and result.backend == "default"
        finished(result)
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value == 42
        assert result.enqueued_at <= result.started_at <= result.finished_at
        assert result.last_attempted_at >= result.started_at
        assert result.worker_ids == [tasks_app.app.node_id]
        assert result.attempts == 1
        assert result.errors == []


def test_aenqueue_and_aget_result(tasks_app):
    """The async twins: aenqueue, aget_result, arefresh."""

    async def scenario():
        result = await jobs.echo.aenqueue(1, (2, 3), key={"a": [1]})
        assert result.args == [1, [2, 3]] and result.kwargs == {"key": {"a": [1]}}
        fetched = await jobs.echo.aget_result(result.id)
        assert fetched.id == result.id
        for _ in range(2000):  # bounded: 20 s
            await result.arefresh()
            if result.is_finished:
                break
            await asyncio.sleep(0.01)
        return result

    result = asyncio.run(scenario())
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == {"args": [1, [2, 3]], "kwargs": {"key": {"a": [1]}}}


def test_failure_stores_exception_class_and_traceback(tasks_app):
    """A raising task is FAILED with the exception class and its traceback;
    return_value raises as the framework says."""
    result = finished(jobs.failing_task_value_error.enqueue())
    assert result.status == TaskResultStatus.FAILED
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    assert [e.exception_class for e in result.errors] == [ValueError]
    assert result.errors[0].traceback.endswith(
        "ValueError: This Task failed due to ValueError\n"
    )


def test_system_exit_and_bad_return_value_fail(tasks_app):
    """SystemExit is a task failure (the worker survives); a return value that is
    not JSON fails with TypeError, as in Django's backends."""
    exiting = finished(jobs.failing_task_system_exit.enqueue())
    assert exiting.errors[0].exception_class is SystemExit
    bad = finished(jobs.complex_return_value.enqueue())
    assert bad.status == TaskResultStatus.FAILED
    assert bad.errors[0].exception_class is TypeError
    with pytest.raises(ValueError, match="Task failed"):
        bad.return_value  # noqa: B018


def test_takes_context_and_retries_with_attempt_number(tasks_app):
    """A task with max_retries=2 that fails twice succeeds on attempt 3: the
    context's attempt counts 1, 2, 3; each failure is kept in errors."""
    result = finished(jobs.flaky.enqueue(2))
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 3
    assert result.attempts == 3
    assert [e.exception_class for e in result.errors] == [RuntimeError] * 2
    assert "attempt 2 fails" in result.errors[1].traceback


def test_retries_exhausted_dead_letter(tasks_app):
    """max_retries=1: two attempts, then FAILED and the event is a dead letter on
    the queue's channel."""
    result = finished(jobs.always_fails.enqueue())
    assert result.status == TaskResultStatus.FAILED
    assert result.attempts == 2 and len(result.errors) == 2
    queue = tasks_app.app.event_queue
    wait_until(
        lambda: [d.id for d in queue.dead_letters("tasks.default")] == [result.id]
    )


def test_get_result_unknown_id(tasks_app):
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("0" * 32)
    with pytest.raises(TaskResultDoesNotExist):
        jobs.noop_task.get_result("nope")


def test_get_result_of_other_task_mismatches(tasks_app):
    from django.tasks.exceptions import TaskResultMismatch

    result = jobs.noop_task.enqueue()
    with pytest.raises(TaskResultMismatch):
        jobs.echo.get_result(result.id)


def test_run_after_defers(tasks_app):
    """run_after: the task does not start before that time."""
    when = timezone.now() + timedelta(seconds=1.5)
    result = jobs.noop_task.using(run_after=when).enqueue()
    finished(result)
    assert result.started_at >= when
    assert default_task_backend.get_result(result.id).task.run_after == when


def test_queue_names_map_to_channels(tasks_app):
    """Each queue is the channel tasks.<queue>; channel_for() tells which."""
    assert channel_for(jobs.noop_task) == "tasks.default"
    other = jobs.noop_task.using(queue_name="other")
    assert channel_for(other) == "tasks.other"
    result = finished(other.enqueue())
    assert result.task.queue_name == "other"
    stats = tasks_app.app.event_queue.stats()
    wait_until(
        lambda: tasks_app.app.event_queue.stats()["tasks.other"]["succeeded"] == 1
    )
    assert "tasks.default" in stats


def test_unknown_queue_and_bad_options_are_invalid(tasks_app):
    with pytest.raises(InvalidTask, match="Queue 'nope' is not valid"):
        jobs.noop_task.using(queue_name="nope").enqueue()
    with pytest.raises(InvalidTask, match="max_retries"):
        jobs.noop_task.using(max_retries=-1)
    with pytest.raises(InvalidTask, match="max_retries"):
        jobs.noop_task.using(max_retries=True)


def test_arguments_must_be_json(tasks_app):
    """Arguments that are not JSON raise at enqueue and nothing is stored."""
    from mega_cluster.models import TaskRun

    with pytest.raises(TypeError):
        jobs.echo.enqueue(object())
    assert not TaskRun.objects.using(tasks_app.alias).filter(backend="default").exists()


def _pending(tasks_app) -> int:
    from django.db import connections

    try:
        stats = tasks_app.app.event_queue.stats("tasks.default")["tasks.default"]
        return stats["pending"] + stats["running"] + stats["succeeded"]
    finally:
        connections.close_all()


def test_enqueue_inside_atomic_waits_for_commit(tasks_app):
    """Inside atomic() the task is queued at commit, never on rollback."""
    from mega_cluster.models import TaskRun

    alias = tasks_app.alias
    with transaction.atomic(using=alias):
        kept = jobs.noop_task.enqueue()
        # Another connection (a worker's) sees no event before the commit.
        seen = []
        reader = threading.Thread(target=lambda: seen.append(_pending(tasks_app)))
        reader.start()
        reader.join(30)
        assert seen == [0]
    finished(kept)
    assert kept.status == TaskResultStatus.SUCCESSFUL

    class Rollback(Exception):
        pass

    with pytest.raises(Rollback), transaction.atomic(using=alias):
        dropped = jobs.noop_task.enqueue()
        raise Rollback
    assert not TaskRun.objects.using(alias).filter(id=dropped.id).exists()
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result(dropped.id)


@pytest.mark.event_queue(LEASE=30.0)  # no renewal during the test
def test_lost_lease_cannot_write_result(tasks_app, tmp_path: Path):
    """An attempt whose event lease lapsed under it (a frozen worker) cannot write
    its result: attempt 1 returns but is refused; the event is taken again and
    attempt 2's result is the one stored. (Transports with leases.)"""
    if tasks_app.transport == "memory":
        pytest.skip("the memory transport has no lease to lose")
    if tasks_app.transport == "celery-failures":
        pytest.skip("a lean first attempt has no row and no lease to lose")
    log = tmp_path / "runs.jsonl"
    result = finished(jobs.expire_own_lease.enqueue(str(log)), timeout=60)
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["attempt"] for r in runs] == [1, 2]
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 2  # attempt 1 returned 1: refused
    assert result.attempts == 2
