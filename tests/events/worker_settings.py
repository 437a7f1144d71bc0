"""Settings of ``runworker`` children and publishers in the cluster tests.

The default database is the run's PostgreSQL test database; the event-queue
backend, app name and timings come from the environment the test sets.
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, INSTALLED_APPS, PG_TEST_NAME

INSTALLED_APPS = [*INSTALLED_APPS, "tests.events.worker_app"]
DATABASES = {"default": {**DATABASES["postgres"], "NAME": PG_TEST_NAME}}
_queue = {
    "BACKEND": os.environ.get("MC_EVENTS_BACKEND", "database"),
    "LEASE": float(os.environ.get("MC_EVENTS_LEASE", "2")),
    "POLL_INTERVAL": float(os.environ.get("MC_EVENTS_POLL", "0.5")),
    "RETRY_BASE": 0.05,
    "RETRY_CAP": 0.2,
}
if os.environ.get("MC_EVENTS_OPTIONS"):
    import json

    _queue["OPTIONS"] = json.loads(os.environ["MC_EVENTS_OPTIONS"])
MEGA_CLUSTER = {"APP_NAME": os.environ["MC_APP_NAME"], "EVENT_QUEUE": _queue}
