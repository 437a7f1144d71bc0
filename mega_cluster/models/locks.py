from __future__ import annotations

from django.db import models


class LockLease(models.Model):
    """One lock key of one cluster app: its current lease and its fence counter.

    The row outlives the lease (``token`` is emptied on release) so that the fence
    keeps increasing for the key; there is one row per key ever locked.
    """

    app_name = models.CharField(max_length=50)
    key = models.CharField(max_length=512)
    token = models.CharField(max_length=64, blank=True, default="")
    holder = models.CharField(max_length=120, blank=True, default="")
    fence = models.BigIntegerField(default=0)
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "mega_cluster"
        verbose_name = "lock"
        verbose_name_plural = "locks"
        ordering = ["app_name", "key"]
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "key"], name="mega_cluster_lock_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.key}"


class LockWaiter(models.Model):
    """A place in a lock's FIFO queue; dropped when ``deadline`` passes unrefreshed."""

    app_name = models.CharField(max_length=50)
    key = models.CharField(max_length=512)
    waiter = models.CharField(max_length=64)
    deadline = models.DateTimeField()

    class Meta:
        app_label = "mega_cluster"
        verbose_name = "lock waiter"
        verbose_name_plural = "lock waiters"
        indexes = [
            models.Index(
                fields=["app_name", "key", "id"], name="mega_cluster_lockq_idx"
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["waiter"], name="mega_cluster_waiter_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.key} <- {self.waiter}"
