from __future__ import annotations

import uuid

from django.db import models


class Task(models.Model):
    """A long task run by the event queue on some worker node; progress lives here."""

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        RETRYING = "retrying"  # an attempt failed, another one is queued
        SUCCEEDED = "succeeded"
        CANCELLED = "cancelled"
        DEAD = "dead"  # every attempt failed; the event is a dead letter

    FINISHED = (Status.SUCCEEDED, Status.CANCELLED, Status.DEAD)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    kind = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.QUEUED
    )
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(null=True, blank=True)
    message = models.CharField(max_length=300, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=0)
    node_id = models.CharField(
        max_length=200, blank=True, help_text="The node running the latest attempt."
    )
    event_id = models.CharField(max_length=64, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def percent(self) -> int | None:
        if not self.progress_total:
            return None
        return min(100, round(100 * self.progress_done / self.progress_total))


class TaskQueueState(models.Model):
    """Cluster-wide switch of the task queue: while paused no node takes new tasks."""

    name = models.CharField(max_length=50, primary_key=True, default="default")
    paused = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name}: {'paused' if self.paused else 'running'}"
