"""Settings of the ``runworker`` children of tests/cluster/test_schedules.py: the
run's PostgreSQL test database, the ``database`` event queue, one job ``beat``
(``MC_BEAT_EVERY`` seconds) that logs its runs (``tests.schedules.beat``)."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, PG_TEST_NAME

DATABASES = {"default": {**DATABASES["postgres"], "NAME": PG_TEST_NAME}}
MEGA_CLUSTER = {
    "APP_NAME": os.environ["MC_APP_NAME"],
    "EVENT_QUEUE": {
        "BACKEND": "database",
        "LEASE": float(os.environ.get("MC_EVENTS_LEASE", "2")),
        "POLL_INTERVAL": 0.5,
    },
    "SCHEDULES": {
        "JOBS": {
            "beat": {
                "FUNCTION": "tests.schedules.beat.beat",
                "EVERY": int(os.environ.get("MC_BEAT_EVERY", "1")),
            }
        },
        "INTERVAL": 1.0,
    },
}
