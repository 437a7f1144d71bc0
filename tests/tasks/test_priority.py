"""Priority on the transports that honour it (``database``: SQLite, PostgreSQL):
of the tasks waiting together, the higher priority runs first."""

from __future__ import annotations

import pytest
from django.test import override_settings

from mega_cluster.models import TaskRun
from mega_cluster.registry import registry
from mega_cluster.testing import cluster_settings, make_app, wait_until
from tests.databases import ON_POSTGRES

from . import jobs
from .conftest import tasks_setting


@pytest.mark.parametrize(
    "database",
    [
        pytest.param("default", marks=pytest.mark.django_db(transaction=True)),
        pytest.param("postgres", marks=ON_POSTGRES),
    ],
)
def test_higher_priority_runs_first(unique_name, database, tmp_path):
    """Tasks enqueued lowest priority first, then one worker slot: they run highest
    priority first (a 1 s head start per point, far more than the enqueues take)."""
    queue = {
        "BACKEND": "database",
        "POLL_INTERVAL": 0.05,
        "OPTIONS": {"DATABASE": database},
    }
    log = tmp_path / "runs.log"
    with (
        cluster_settings({"APP_NAME": unique_name, "EVENT_QUEUE": queue}),
        override_settings(TASKS=tasks_setting(CONCURRENCY=1, PRIORITY_STEP=1.0)),
    ):
        app = registry.get()
        app.event_queue.consume = False  # enqueue only: the backlog waits
        app.start()
        ids = {
            priority: jobs.record_run.using(priority=priority).enqueue(str(log)).id
            for priority in (-50, 0, 50, 100)
        }
        worker = make_app(unique_name, {"EVENT_QUEUE": queue}, node_id="worker")
        try:
            worker.event_queue  # noqa: B018 - built: it starts with the app
            worker.start()
            runs = TaskRun.objects.using(database).filter(id__in=ids.values())
            wait_until(lambda: runs.filter(status="SUCCESSFUL").count() == 4, 30)
        finally:
            worker.stop()
            app.stop()
    order = log.read_text().split()
    assert order == [ids[100], ids[50], ids[0], ids[-50]]
