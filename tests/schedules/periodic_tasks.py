"""``django.tasks`` tasks made periodic (imported with ``TASKS`` set, see
test_tasks.py): each run is noted in ``RAN``."""

from __future__ import annotations

from django.tasks import task

from mega_cluster.schedules import periodic

RAN: list[str] = []


@periodic(every=3600, name="tasks.report")
@task
def report():
    RAN.append("report")
    return "reported"


@task(queue_name="other")
def plain():
    RAN.append("plain")
    return "plain"
