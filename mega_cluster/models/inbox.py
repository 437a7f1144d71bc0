from __future__ import annotations

from django.db import models


class InboxEntry(models.Model):
    """One message or event whose idempotent handler's effect committed: written in
    the handler's own transaction, so a redelivery finds it and is skipped
    (docs/delivery-semantics.md, "exactly-once effect"). Rows older than
    ``INBOX["RETENTION"]`` are pruned."""

    app_name = models.CharField(max_length=50)
    #: ``event:<channel>`` or ``sync:<channel>:<handler>`` (hashed when longer).
    consumer = models.CharField(max_length=255)
    message_id = models.CharField(max_length=64)
    #: Unix time of the commit's transaction start (what the prune compares).
    created_at = models.FloatField()

    class Meta:
        app_label = "mega_cluster"
        db_table = "mega_cluster_inbox"
        verbose_name = "inbox entry"
        verbose_name_plural = "inbox entries"
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "consumer", "message_id"],
                name="mega_cluster_inbox_unique",
            )
        ]
        indexes = [
            models.Index(
                fields=["app_name", "created_at"], name="mega_cluster_inbox_age"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.consumer}:{self.message_id}"


class InboxTally(models.Model):
    """Per app and consumer: redeliveries skipped because their effect had already
    committed (the admin's and ``Inbox.stats()``'s "skipped duplicates")."""

    app_name = models.CharField(max_length=50)
    consumer = models.CharField(max_length=255)
    skipped = models.BigIntegerField(default=0)

    class Meta:
        app_label = "mega_cluster"
        db_table = "mega_cluster_inbox_tally"
        verbose_name = "inbox tally"
        verbose_name_plural = "inbox tallies"
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "consumer"], name="mega_cluster_inbox_tally_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.consumer}"
