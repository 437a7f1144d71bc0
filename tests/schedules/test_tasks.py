"""Periodic ``django.tasks`` tasks: ``@periodic`` above ``@task`` or ``TASK`` in the
setting; each tick enqueues the task on its ``mega_cluster.tasks`` backend, which
runs it with its own retries and result."""

from __future__ import annotations

import pytest

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6.0+")

from django.test import override_settings

from mega_cluster.registry import registry
from mega_cluster.schedules import get_schedules
from mega_cluster.testing import cluster_settings, wait_until
from tests.tasks.conftest import tasks_setting

with override_settings(TASKS=tasks_setting()):
    from . import periodic_tasks

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def app(unique_name):
    value = {
        "APP_NAME": unique_name,
        "EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05},
        "SCHEDULES": {
            "JOBS": {
                "plain": {"TASK": "tests.schedules.periodic_tasks.plain", "EVERY": 1}
            }
        },
    }
    periodic_tasks.RAN.clear()
    with cluster_settings(value), override_settings(TASKS=tasks_setting()):
        app = registry.get()
        app.event_queue.configure_worker()
        app.start()
        try:
            yield app
        finally:
            app.stop()


def test_both_forms_are_jobs_of_the_tasks_app(app):
    jobs = get_schedules(app).jobs()
    assert jobs["tasks.report"].task is periodic_tasks.report
    assert jobs["tasks.report"].source == "task tests.schedules.periodic_tasks.report"
    assert jobs["plain"].task is periodic_tasks.plain
    assert jobs["plain"].every == 1


def test_a_tick_enqueues_the_task_which_its_backend_runs(app):
    schedules = get_schedules(app)
    schedules.tick()  # the job's state starts now
    queued = wait_until(
        lambda: [r for r in schedules.tick() if r.job == "plain"], 5, "a tick"
    )
    assert len(queued) == 1
    wait_until(lambda: "plain" in periodic_tasks.RAN, 10, "the task to run")
    run = schedules.runs("plain", limit=1)[0]
    result = periodic_tasks.plain.get_result(run.event_id)  # the task's result id
    wait_until(lambda: result.refresh() or result.status.name == "SUCCESSFUL", 10)
    assert result.return_value == "plain"
    status = {s.job.name: s for s in schedules.status()}["plain"]
    assert status.last_run.status == "succeeded"


def test_run_now_enqueues_a_task(app):
    schedules = get_schedules(app)
    schedules.run_now("tasks.report")
    wait_until(lambda: "report" in periodic_tasks.RAN, 10, "the task to run")
    (run,) = schedules.runs("tasks.report")
    assert run.manual
    assert periodic_tasks.report.get_result(run.event_id).task.name == "report"
