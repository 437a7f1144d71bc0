from __future__ import annotations

from datetime import UTC, datetime

from django.db import models
from django.db.models import Q


class QueuedEvent(models.Model):
    """One event of the ``database`` event-queue backend (and the Celery backend's
    shared store): its payload, state, attempts and lease.

    Times the workers compare (``available_at``, ``lease_expires_at``,
    ``finished_at``) are Unix timestamps so the claim is one portable SQL statement.
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    STATUSES = [
        (PENDING, "pending"),
        (RUNNING, "running"),
        (SUCCEEDED, "succeeded"),
        (DEAD, "dead"),
    ]

    id = models.CharField(primary_key=True, max_length=32)
    app_name = models.CharField(max_length=50)
    channel = models.CharField(max_length=200)
    payload = models.TextField()
    status = models.CharField(max_length=10, choices=STATUSES, default=PENDING)
    attempts = models.PositiveIntegerField(default=0)
    failures = models.PositiveIntegerField(default=0)
    max_retries = models.PositiveIntegerField(default=0)
    timeout = models.FloatField(null=True, blank=True)
    # Set while the event waits for its first attempt; the unique constraint below
    # keeps one such event per key and channel.
    dedupe_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    available_at = models.FloatField()
    lease_expires_at = models.FloatField(null=True, blank=True)
    claimed_by = models.CharField(max_length=120, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.FloatField(null=True, blank=True)

    class Meta:
        app_label = "mega_cluster"
        db_table = "mega_cluster_event"
        verbose_name = "queued event"
        verbose_name_plural = "queued events"
        indexes = [
            models.Index(
                fields=["app_name", "channel", "status", "available_at"],
                name="mega_cluster_event_claim",
            ),
            # What the retention prune looks for: succeeded events by age.
            models.Index(
                fields=["app_name", "finished_at"],
                condition=Q(status="succeeded"),
                name="mega_cluster_event_done",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "channel", "dedupe_key"],
                condition=Q(dedupe_key__isnull=False),
                name="mega_cluster_event_dedupe",
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.channel}:{self.id}"

    @property
    def finished(self) -> datetime | None:
        if self.finished_at is None:
            return None
        return datetime.fromtimestamp(self.finished_at, tz=UTC)


class EventTally(models.Model):
    """Counts of the succeeded events that ``RETENTION`` pruned, per app and channel:
    ``stats()`` adds them, so ``succeeded`` and ``failed`` keep counting every
    event ever finished while the table keeps only recent ones."""

    app_name = models.CharField(max_length=50)
    channel = models.CharField(max_length=200)
    succeeded = models.BigIntegerField(default=0)
    failed = models.BigIntegerField(default=0)

    class Meta:
        app_label = "mega_cluster"
        db_table = "mega_cluster_event_tally"
        verbose_name = "event tally"
        verbose_name_plural = "event tallies"
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "channel"], name="mega_cluster_event_tally_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.channel}"
