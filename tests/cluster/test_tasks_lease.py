"""The result write of a ``mega_cluster.tasks`` attempt is fenced by its lease,
between real ``runworker`` processes: a worker frozen (SIGSTOP) mid-task past its
lease loses the task to another node; when it thaws, its function returns but its
result is refused."""

from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip("django.tasks", reason="django.tasks needs Django 6.0+")

from django.test import override_settings

from mega_cluster.models import TaskRun
from mega_cluster.registry import registry
from mega_cluster.testing import cluster_settings
from tests.tasks.conftest import tasks_setting

from .events_support import spawn_workers, terminate, wait_until

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.postgres,
    pytest.mark.django_db(databases=["default", "postgres"], transaction=True),
]


def _lines(path):
    return [line.split() for line in path.read_text().splitlines() if line]


@pytest.mark.timeout(300)
def test_frozen_worker_cannot_write_its_result(procs, unique_name, tmp_path):
    """Node A starts the task and is frozen past its 1.5 s lease; node B takes the
    task (attempt 2) and records its result. A thawed finishes its function, but
    its result write is refused (LeaseLost): the stored result stays B's."""
    from tests.tasks import jobs

    log = tmp_path / "tasks.log"
    log.touch()
    env = {
        "MC_CHILD_SETTINGS": "tests.tasks.worker_settings",
        "MC_APP_NAME": unique_name,
        "MC_EVENTS_LEASE": "1.5",
        "MC_EVENTS_POLL": "0.2",
        "MC_TASKS_LOG": str(log),
        "MC_TASKS_SLEEP": "2",
    }
    queue = {"BACKEND": "database", "OPTIONS": {"DATABASE": "postgres"}}
    with (
        cluster_settings({"APP_NAME": unique_name, "EVENT_QUEUE": queue}),
        override_settings(TASKS=tasks_setting()),
    ):
        app = registry.get()
        app.event_queue.consume = False  # this process only enqueues
        app.start()
        try:
            (node_a,) = spawn_workers(procs, 1, env)
            result = jobs.whose.enqueue()
            wait_until(
                lambda: any(f[0] == "start" for f in _lines(log)),
                90,
                "node A to start the task",
                [node_a],
            )
            os.killpg(node_a.pid, signal.SIGSTOP)
            (node_b,) = spawn_workers(procs, 1, env)
            row = TaskRun.objects.using("postgres")
            wait_until(
                lambda: row.get(id=result.id).status == "SUCCESSFUL",
                90,
                "node B to run the task",
                [node_b],
            )
            os.killpg(node_a.pid, signal.SIGCONT)
            wait_until(
                lambda: ["done", result.id, "1", str(node_a.pid)] in _lines(log),
                60,
                "node A's function to return",
            )
            code_a, _, err_a = terminate(node_a)
            code_b, _, err_b = terminate(node_b)
            stored = row.get(id=result.id)
        finally:
            app.stop()
    assert (code_a, code_b) == (0, 0), err_a[-3000:] + err_b[-3000:]
    assert "LeaseLost" in err_a and "lost its lease" in err_a, err_a[-3000:]
    assert stored.status == "SUCCESSFUL"
    assert stored.return_value == node_b.pid  # not node A's
    assert stored.attempt == 2 and len(stored.worker_ids) == 2
    assert stored.worker_ids[0] != stored.worker_ids[1]
    starts = [f for f in _lines(log) if f[0] == "start"]
    assert [(f[2], f[3]) for f in starts] == [
        ("1", str(node_a.pid)),
        ("2", str(node_b.pid)),
    ]
