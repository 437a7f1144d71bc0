"""``TaskRun`` rows as ``django.tasks`` ``TaskResult`` values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.tasks import Task, TaskResult, TaskResultStatus
from django.tasks.base import TaskError
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from ..models import TaskRun


def load_task(row: TaskRun) -> Task:
    """The task a row runs: the ``@task`` object at its path, with the row's queue
    and priority. Raises ``ValueError`` when the path names no Task (any more)."""
    try:
        task = import_string(row.task_path)
    except ImportError as exc:
        raise ValueError(f"task {row.task_path!r} cannot be imported: {exc}") from exc
    if not isinstance(task, Task):
        raise ValueError(f"{row.task_path!r} is not a django.tasks Task.")
    changes: dict[str, Any] = {}
    if task.queue_name != row.queue_name:
        changes["queue_name"] = row.queue_name
    if task.priority != row.priority:
        changes["priority"] = row.priority
    if row.run_after is not None:
        changes["run_after"] = row.run_after
    return task.using(**changes) if changes else task


def to_result(row: TaskRun, task: Task | None = None) -> TaskResult:
    result: TaskResult = TaskResult(
        task=task if task is not None else load_task(row),
        id=row.id,
        status=TaskResultStatus(row.status),
        enqueued_at=row.enqueued_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        last_attempted_at=row.last_attempted_at,
        args=list(row.args),
        kwargs=dict(row.kwargs),
        backend=row.backend,
        errors=[
            TaskError(
                exception_class_path=e["exception_class_path"],
                traceback=e["traceback"],
            )
            for e in row.errors
        ],
        worker_ids=list(row.worker_ids),
    )
    if row.status == "SUCCESSFUL":
        object.__setattr__(result, "_return_value", row.return_value)
    return result
