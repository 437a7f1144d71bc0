"""The transactional outbox: sync messages and events written in the caller's
transaction, their per-channel sequence numbers and the receivers' cursors."""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class OutboxMessage(models.Model):
    """One sync message (``kind="sync"``, numbered ``seq`` per app and channel) or
    event (``kind="event"``, the event's fields as JSON in ``payload``) written in
    the publishing transaction. ``sent_at`` is set once it was handed to the
    broker; the relay sends rows left unsent. Rows are pruned after
    ``OUTBOX["RETENTION"]``; sync messages are read back by receivers that missed
    some (replay)."""

    SYNC = "sync"
    EVENT = "event"

    id = models.BigAutoField(primary_key=True)
    app_name = models.CharField(max_length=50)
    kind = models.CharField(max_length=5, choices=[(SYNC, "sync"), (EVENT, "event")])
    channel = models.CharField(max_length=200)
    seq = models.BigIntegerField(null=True, blank=True)
    #: the node whose transaction wrote it (its own receivers skip it)
    node = models.CharField(max_length=120)
    payload = models.TextField()
    created_at = models.FloatField()
    sent_at = models.FloatField(null=True, blank=True)
    #: failed relay sends (the relay backs off)
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        app_label = "mega_cluster"
        db_table = "mega_cluster_outbox"
        verbose_name = "outbox message"
        verbose_name_plural = "outbox"
        ordering = ["id"]
        indexes = [
            # what the relay looks for: unsent rows by age
            models.Index(
                fields=["app_name", "created_at"],
                condition=Q(sent_at__isnull=True),
                name="mega_cluster_outbox_unsent",
            ),
            models.Index(fields=["created_at"], name="mega_cluster_outbox_age"),
        ]
        constraints = [
            # what a replay reads: one channel's range of numbers
            models.UniqueConstraint(
                fields=["app_name", "channel", "seq"],
                condition=Q(kind="sync"),
                name="mega_cluster_outbox_seq",
            )
        ]

    def __str__(self) -> str:
        seq = f"#{self.seq}" if self.seq is not None else self.kind
        return f"{self.app_name}:{self.channel}{seq}"


class SyncSequence(models.Model):
    """The last sequence number given out per app and sync channel (in the
    publishing transaction: numbers are gapless and in commit order)."""

    app_name = models.CharField(max_length=50)
    channel = models.CharField(max_length=200)
    last = models.BigIntegerField(default=0)

    class Meta:
        app_label = "mega_cluster"
        db_table = "mega_cluster_sync_sequence"
        verbose_name = "sync sequence"
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "channel"], name="mega_cluster_sync_sequence_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.channel}={self.last}"


class SyncCursor(models.Model):
    """How far a named receiver (``OUTBOX["RECEIVER"]``) handled each sync channel,
    so it replays what it missed after a restart."""

    app_name = models.CharField(max_length=50)
    receiver = models.CharField(max_length=120)
    channel = models.CharField(max_length=200)
    last = models.BigIntegerField(default=0)

    class Meta:
        app_label = "mega_cluster"
        db_table = "mega_cluster_sync_cursor"
        verbose_name = "sync cursor"
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "receiver", "channel"],
                name="mega_cluster_sync_cursor_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.receiver}:{self.channel}={self.last}"
