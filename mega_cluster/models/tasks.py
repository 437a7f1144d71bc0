from __future__ import annotations

from django.db import models


class TaskRun(models.Model):
    """The durable result of one ``django.tasks`` task enqueued on a
    ``mega_cluster.tasks`` backend; its id is the id of the event that runs it.

    ``attempt`` is the fence: the number of the attempt that owns the row. An
    attempt writes its start and its outcome only while it still owns the row (and
    its event's lease), so a worker that lost its lease cannot write a result.
    """

    READY = "READY"
    RUNNING = "RUNNING"
    FAILED = "FAILED"
    SUCCESSFUL = "SUCCESSFUL"
    STATUSES = [
        (READY, "Ready"),
        (RUNNING, "Running"),
        (FAILED, "Failed"),
        (SUCCESSFUL, "Successful"),
    ]

    id = models.CharField(primary_key=True, max_length=32)
    app_name = models.CharField(max_length=50)
    backend = models.CharField(max_length=100)
    task_path = models.CharField(max_length=300)
    queue_name = models.CharField(max_length=200)
    priority = models.SmallIntegerField(default=0)
    run_after = models.DateTimeField(null=True, blank=True)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    status = models.CharField(max_length=10, choices=STATUSES, default=READY)
    return_value = models.JSONField(null=True, blank=True)
    errors = models.JSONField(default=list)
    worker_ids = models.JSONField(default=list)
    attempt = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=0)
    enqueued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    last_attempted_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "mega_cluster"
        db_table = "mega_cluster_task_run"
        verbose_name = "task run"
        verbose_name_plural = "task runs"
        indexes = [
            models.Index(
                fields=["app_name", "task_path", "status"],
                name="mega_cluster_task_run_task",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_path}:{self.id}"
