"""Operating on task runs (the admin's Queues page uses these): list them by task,
retry or discard a failed one. No ``django.tasks`` import: the rows are read on
any Django version.

A task run's id is its event's id, so a failed task run is the dead letter of the
same id on its queue's channel: retrying it queues the event again (fresh attempt
budget, the task runs again from ``READY``); discarding it deletes the dead letter
and the run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db.models import Count

from ..exceptions import EventNotFound
from .store import rows

if TYPE_CHECKING:
    from ..registry import ClusterApp

STATUSES = ("READY", "RUNNING", "SUCCESSFUL", "FAILED")


def _runs(app: ClusterApp) -> Any:
    return rows(app.event_queue.backend.transaction_alias()).filter(app_name=app.name)


def summary(app: ClusterApp) -> list[dict[str, Any]]:
    """``[{"task": path, "READY": n, "RUNNING": n, "SUCCESSFUL": n, "FAILED": n}]``
    for every task with runs in ``app``, by task path."""
    by_task: dict[str, dict[str, Any]] = {}
    counts = (
        _runs(app).order_by().values_list("task_path", "status").annotate(n=Count("id"))
    )
    for path, status, n in counts:
        row = by_task.setdefault(path, {"task": path, **dict.fromkeys(STATUSES, 0)})
        row[status] = n
    return [by_task[path] for path in sorted(by_task)]


def recent(
    app: ClusterApp,
    task: str | None = None,
    status: str | None = None,
    limit: int = 100,
) -> list[Any]:
    """The newest task runs (``TaskRun`` rows), of one task path and/or status."""
    qs = _runs(app)
    if task:
        qs = qs.filter(task_path=task)
    if status:
        qs = qs.filter(status=status)
    return list(qs.order_by("-enqueued_at", "-id")[:limit])


def recent_one(app: ClusterApp, task_id: str) -> Any:
    """The task run ``task_id`` of ``app`` (a ``TaskRun``), or None."""
    return _runs(app).filter(id=task_id).first()


def retry(app: ClusterApp, task_id: str) -> None:
    """Run a failed task again: ``READY``, its dead letter queued with a fresh
    budget. Raises ``EventNotFound`` when the run is not failed with a dead
    letter (e.g. the memory transport lost it)."""
    run = _runs(app).filter(id=task_id, status="FAILED")
    # READY before the event is queued: a worker may start it at once.
    if not run.update(status="READY", finished_at=None):
        raise EventNotFound(f"No failed task run with id {task_id!r}.")
    try:
        app.event_queue.retry_dead(task_id)
    except BaseException:
        _runs(app).filter(id=task_id, status="READY").update(status="FAILED")
        raise


def discard(app: ClusterApp, task_id: str) -> None:
    """Delete a failed task run and its dead letter; ``EventNotFound`` when there
    is no such failed run."""
    if not _runs(app).filter(id=task_id, status="FAILED").exists():
        raise EventNotFound(f"No failed task run with id {task_id!r}.")
    try:
        app.event_queue.discard_dead(task_id)
    except EventNotFound:
        pass  # no dead letter left (pruned, or a memory queue restarted)
    _runs(app).filter(id=task_id, status="FAILED").delete()
