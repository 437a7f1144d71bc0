"""Periodic jobs: run once per tick across the cluster, by every ``runworker``.

Declared in ``MEGA_CLUSTER["SCHEDULES"]["JOBS"]``, on a plugin (``@periodic`` on
a method, or its ``schedules`` attribute) or on a ``django.tasks`` task; see
docs/schedules.md. ``get_schedules(app)`` gives an app's :class:`Schedules`.
"""

from __future__ import annotations

from typing import Any

from .cron import Cron, CronError
from .jobs import Job, JobError, periodic

__all__ = [
    "Cron",
    "CronError",
    "Job",
    "JobError",
    "JobRun",
    "JobStatus",
    "Schedules",
    "get_schedules",
    "periodic",
]


def __getattr__(name: str) -> Any:
    # The scheduler imports the event queue, whose settings import .jobs: load it
    # on first use so that importing .jobs from the setting parser stays light.
    if name in ("JobRun", "JobStatus", "Schedules", "get_schedules"):
        from . import scheduler

        return getattr(scheduler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
