"""A task whose last attempt was lost (its worker died after taking it) is FAILED
with ``TaskAttemptLost`` without running again; with a retry left it runs again.
On the database transport (SQLite), the dead worker played by the test."""

from __future__ import annotations

import pytest
from django.tasks import TaskResultStatus, default_task_backend
from django.tasks.signals import task_finished
from django.test import override_settings

from mega_cluster.events import EventContext
from mega_cluster.registry import registry
from mega_cluster.tasks.runner import TaskHandler
from mega_cluster.testing import cluster_settings, make_app, wait_until

from . import jobs
from .conftest import tasks_setting

QUEUE = {"BACKEND": "database", "LEASE": 0.3, "POLL_INTERVAL": 0.05}


def _die_holding(app, task) -> str:
    """Enqueue ``task``; take its event and start it as a worker would, then
    'die' (never finish): the lease lapses."""
    result = task.enqueue()
    queue = app.event_queue
    (claimed,) = queue.backend.claim("tasks.default", 1, lease=0.3)
    assert claimed.id == result.id
    ctx = EventContext(id=claimed.id, channel=claimed.channel, attempt=1)
    assert TaskHandler("default", queue).fence(ctx).start("dead-node") is not None
    return result.id


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("retries", "final"), [(0, "FAILED"), (1, "SUCCESSFUL")])
def test_lost_attempt(unique_name, retries, final):
    finished = []

    def on_finished(sender, task_result, **kwargs):
        finished.append(task_result.status)

    with (
        cluster_settings({"APP_NAME": unique_name, "EVENT_QUEUE": QUEUE}),
        override_settings(TASKS=tasks_setting()),
    ):
        app = registry.get()
        app.event_queue.consume = False
        app.start()
        task_finished.connect(on_finished)
        worker = make_app(unique_name, {"EVENT_QUEUE": QUEUE}, node_id="live-node")
        try:
            task_id = _die_holding(
                app, jobs.calculate_meaning_of_life.using(max_retries=retries)
            )
            worker.event_queue  # noqa: B018 - built: it starts with the app
            worker.start()
            wait_until(lambda: default_task_backend.get_result(task_id).is_finished, 20)
            result = default_task_backend.get_result(task_id)
        finally:
            worker.stop()
            task_finished.disconnect(on_finished)
            app.stop()
    assert result.status == final
    assert finished == [final]
    if final == "FAILED":  # the function never ran again
        assert result.worker_ids == ["dead-node"]
        (error,) = result.errors
        assert error.exception_class_path == "mega_cluster.tasks.TaskAttemptLost"
        assert error.exception_class.__name__ == "TaskAttemptLost"  # importable
        assert "attempt 1 was lost" in error.traceback
    else:
        assert result.status == TaskResultStatus.SUCCESSFUL
        assert result.return_value == 42
        assert result.worker_ids == ["dead-node", "live-node"]
