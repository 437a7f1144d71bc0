"""Periodic jobs: each job's state, and one row per run (the exactly-once record).

The unique constraint on ``(app_name, job, tick, manual)`` is what makes a tick run
once across the cluster: a node queues a tick only in the transaction that moves
the job's ``last_tick`` past it (a compare-and-set) and inserts its run row.
Times are the database server's (PostgreSQL) or the machine's (SQLite).
"""

from __future__ import annotations

from django.db import models


class ScheduleState(models.Model):
    """One periodic job of one cluster app: paused or not, last tick queued."""

    app_name = models.CharField(max_length=50)
    name = models.CharField(max_length=150)
    paused = models.BooleanField(default=False)
    last_tick = models.DateTimeField()

    class Meta:
        app_label = "mega_cluster"
        verbose_name = "schedule"
        verbose_name_plural = "schedules"
        default_permissions = ("view",)
        permissions = [
            ("pause_schedule", "Can pause or resume a periodic job"),
            ("run_schedule", "Can run a periodic job now"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "name"], name="mega_cluster_schedule_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.name}"


class ScheduleRun(models.Model):
    """One tick of a job (or a "run now"), queued once; its latest outcome."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    SKIPPED = "skipped"

    app_name = models.CharField(max_length=50)
    job = models.CharField(max_length=150)
    tick = models.DateTimeField()
    manual = models.BooleanField(default=False)
    event_id = models.CharField(max_length=32)
    status = models.CharField(max_length=10, default=QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    node = models.CharField(max_length=120, blank=True, default="")
    queued_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        app_label = "mega_cluster"
        verbose_name = "schedule run"
        verbose_name_plural = "schedule runs"
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "job", "tick", "manual"],
                name="mega_cluster_schedule_run_unique",
            )
        ]
        indexes = [
            models.Index(fields=["app_name", "tick"], name="mega_cluster_run_tick"),
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.job}@{self.tick.isoformat()}"
