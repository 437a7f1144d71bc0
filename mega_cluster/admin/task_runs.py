"""The Queues page's task runs (``mega_cluster.tasks``): counts by task name, the
newest runs, and retry/discard of a failed run (its dead letter)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from ..exceptions import EventNotFound
from ..tasks import operations

if TYPE_CHECKING:
    from .queues import QueueAdmin


def context(admin: QueueAdmin, app: Any, task: str | None) -> dict[str, Any]:
    """The page's ``task_summary`` (by task) and ``task_runs`` (newest, of
    ``task`` when given)."""
    summary = operations.summary(app)
    for row in summary:
        row["url"] = admin.filter_url(app, task=row["task"])
        row["selected"] = row["task"] == task
    runs = [
        {
            "id": run.id,
            "task": run.task_path,
            "queue": run.queue_name,
            "status": run.status,
            "attempts": len(run.worker_ids),
            "enqueued": run.enqueued_at,
            "finished": run.finished_at,
            "error": run.errors[-1]["exception_class_path"] if run.errors else "",
            "retry_url": admin.action_url(app, run.id, "retry"),
            "discard_url": admin.action_url(app, run.id, "discard"),
        }
        for run in operations.recent(app, task)
    ]
    return {
        "task_summary": summary,
        "task_runs": runs,
        "task": task,
        "all_tasks_url": admin.filter_url(app),
    }


def action(
    admin: QueueAdmin, request: HttpRequest, app: Any, run_id: str, action: str
) -> HttpResponse:
    """Retry or discard failed task run ``run_id``: a confirmation page, then the
    POST does it."""
    codename, label, done = {
        "retry": ("retry_event", "Retry", "queued again with a fresh attempt budget"),
        "discard": ("discard_event", "Discard", "deleted with its dead letter"),
    }[action]
    admin.require(request, codename)
    back = admin.filter_url(app)
    run = operations.recent_one(app, run_id)
    if run is None or run.status != "FAILED":
        admin.message_user(
            request, f"Task run {run_id} is not failed (any more).", messages.WARNING
        )
        return HttpResponseRedirect(back)
    if request.method != "POST":
        return admin.render(
            request,
            "event_confirm.html",
            "Are you sure?",
            cluster_app=app,
            crumbs=[(run_id, None), (label, None)],
            event=SimpleNamespace(
                id=run.id,
                channel=f"{run.task_path} (queue {run.queue_name})",
                attempts=len(run.worker_ids),
            ),
            label=label,
            action=action,
            back=back,
        )
    try:
        (operations.retry if action == "retry" else operations.discard)(app, run_id)
    except EventNotFound as exc:
        admin.message_user(request, str(exc), messages.WARNING)
        return HttpResponseRedirect(back)
    admin.log(
        request,
        run_id,
        f"{label} failed task run {run_id} of {run.task_path} in cluster app "
        f"{app.name!r} ({len(run.worker_ids)} attempts).",
    )
    admin.message_user(request, f"Task run {run_id} {done}.", messages.SUCCESS)
    return HttpResponseRedirect(back)
