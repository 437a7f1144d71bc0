"""Settings of the ``runworker`` children of the tasks cluster tests: the events
workers' settings (PostgreSQL as ``default``, app name and timings from the
environment) plus a ``mega_cluster.tasks`` backend."""

import os

from tests.events.worker_settings import *  # noqa: F403
from tests.events.worker_settings import INSTALLED_APPS

# Not the events tests' plugin (it logs its own events and needs their log).
INSTALLED_APPS = [a for a in INSTALLED_APPS if a != "tests.events.worker_app"]

TASKS = {
    "default": {
        "BACKEND": "mega_cluster.tasks.ClusterTaskBackend",
        "QUEUES": ["default", "other"],
        "OPTIONS": {
            "MAX_RETRIES": int(os.environ.get("MC_TASKS_MAX_RETRIES", "3")),
            "CONCURRENCY": int(os.environ.get("MC_TASKS_CONCURRENCY", "4")),
        },
    }
}
