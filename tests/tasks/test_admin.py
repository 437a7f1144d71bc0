"""The admin's Queues page lists task runs by task, with retry and discard of a
failed run (on the database transport, SQLite)."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from mega_cluster.models import TaskRun
from mega_cluster.testing import wait_until
from tests.events.conftest import BACKENDS

from . import jobs

SQLITE = [p for p in BACKENDS if p.id == "database-sqlite"]
QUEUES = "admin:mega_cluster_clusterqueue_changelist"


def _failed(tasks_app) -> TaskRun:
    result = jobs.always_fails.using(max_retries=0).enqueue()
    runs = TaskRun.objects.using(tasks_app.alias)
    wait_until(lambda: runs.get(id=result.id).status == "FAILED", 20)
    queue = tasks_app.app.event_queue
    wait_until(lambda: [d.id for d in queue.dead_letters()] == [result.id], 20)
    return runs.get(id=result.id)


def _action(app, run_id, action):
    return (
        reverse(
            "admin:mega_cluster_clusterqueue_action",
            kwargs={"event_id": run_id, "action": action},
        )
        + f"?app={app.name}"
    )


@pytest.fixture
def admin_client():
    user = User.objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(user)
    return client


@pytest.mark.parametrize("tasks_app", SQLITE, indirect=True)
def test_queues_page_lists_task_runs_by_task(tasks_app, admin_client):
    """Counts per task name and the newest runs, filtered by task."""
    ok = jobs.calculate_meaning_of_life.enqueue()
    failed = _failed(tasks_app)
    runs = TaskRun.objects.using(tasks_app.alias)
    wait_until(lambda: runs.get(id=ok.id).status == "SUCCESSFUL", 20)
    page = admin_client.get(reverse(QUEUES), {"app": tasks_app.app.name})
    assert page.status_code == 200
    summary = {r["task"]: r for r in page.context["task_summary"]}
    assert summary["tests.tasks.jobs.always_fails"]["FAILED"] == 1
    assert summary["tests.tasks.jobs.calculate_meaning_of_life"]["SUCCESSFUL"] == 1
    assert {r["id"] for r in page.context["task_runs"]} == {ok.id, failed.id}
    text = page.content.decode()
    assert 'class="mc-task-retry"' in text  # only the failed run has actions
    assert text.count('class="mc-task-retry"') == 1
    only = admin_client.get(
        reverse(QUEUES),
        {"app": tasks_app.app.name, "task": "tests.tasks.jobs.always_fails"},
    )
    assert [r["id"] for r in only.context["task_runs"]] == [failed.id]


@pytest.mark.parametrize("tasks_app", SQLITE, indirect=True)
def test_retry_runs_a_failed_task_again(tasks_app, admin_client):
    """GET confirms; POST queues its dead letter again: the task runs once more
    (a fresh budget) and fails again, logged in the admin's history."""
    failed = _failed(tasks_app)
    url = _action(tasks_app.app, failed.id, "retry")
    assert admin_client.get(url).status_code == 200
    assert TaskRun.objects.using(tasks_app.alias).get(id=failed.id).status == "FAILED"
    assert admin_client.post(url).status_code == 302
    runs = TaskRun.objects.using(tasks_app.alias)
    wait_until(lambda: len(runs.get(id=failed.id).worker_ids) == 2, 20)
    wait_until(lambda: runs.get(id=failed.id).status == "FAILED", 20)
    assert len(runs.get(id=failed.id).errors) == 2
    (entry,) = LogEntry.objects.all()
    assert "Retry" in entry.change_message and "always_fails" in entry.change_message


@pytest.mark.parametrize("tasks_app", SQLITE, indirect=True)
def test_discard_deletes_the_run_and_its_dead_letter(tasks_app, admin_client):
    failed = _failed(tasks_app)
    assert (
        admin_client.post(_action(tasks_app.app, failed.id, "discard")).status_code
        == 302
    )
    assert not TaskRun.objects.using(tasks_app.alias).filter(id=failed.id).exists()
    assert tasks_app.app.event_queue.dead_letters() == []
    # A run that is not failed (any more) is refused with a message.
    again = admin_client.post(_action(tasks_app.app, failed.id, "discard"))
    assert again.status_code == 302
