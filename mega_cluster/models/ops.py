"""Unmanaged models that only carry the admin's pages and permissions.

They have no table: the Locks and Queues pages read ``app.lock_manager`` and
``app.event_queue``. Their permissions are what the admin checks: ``view_*`` to
see a page, ``force_release_lock`` / ``retry_event`` / ``discard_event`` to act.
"""

from __future__ import annotations

from django.db import models


class ClusterLock(models.Model):
    """A held lock, as listed by ``app.lock_manager.list_locks()``."""

    key = models.CharField(max_length=512, primary_key=True)

    class Meta:
        app_label = "mega_cluster"
        managed = False
        verbose_name = "lock"
        verbose_name_plural = "locks"
        default_permissions = ("view",)
        permissions = [("force_release_lock", "Can force-release a held lock")]

    def __str__(self) -> str:
        return self.key


class ClusterQueue(models.Model):
    """An event-queue channel, as listed by ``app.event_queue.stats()``."""

    channel = models.CharField(max_length=200, primary_key=True)

    class Meta:
        app_label = "mega_cluster"
        managed = False
        verbose_name = "queue"
        verbose_name_plural = "queues"
        default_permissions = ("view",)
        permissions = [
            ("retry_event", "Can retry a dead-lettered event"),
            ("discard_event", "Can discard a dead-lettered event"),
        ]

    def __str__(self) -> str:
        return self.channel
