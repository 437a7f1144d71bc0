from __future__ import annotations

from django.db import models


class Node(models.Model):
    """A node's last heartbeat, when the node registry uses the database.

    With a Redis lock or pub/sub backend the heartbeats live in Redis instead; read
    nodes through ``app.node_registry.list_nodes()``, never from this table.
    """

    app_name = models.CharField(max_length=50)
    node_id = models.CharField(max_length=120)
    host = models.CharField(max_length=255, blank=True, default="")
    pid = models.IntegerField(default=0)
    role = models.CharField(max_length=20, default="web")
    version = models.CharField(max_length=50, blank=True, default="")
    started_at = models.FloatField()
    heartbeat_at = models.FloatField()
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        app_label = "mega_cluster"
        verbose_name = "node"
        verbose_name_plural = "nodes"
        ordering = ["app_name", "node_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "node_id"], name="mega_cluster_node_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.node_id}"


class DatabaseIdentity(models.Model):
    """One row: a random id of this database, written by the first node to start.

    Every node advertises it in its heartbeat, so two deployments that share one
    ``APP_NAME`` on one broker but use different databases are told apart.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    uuid = models.CharField(max_length=32)

    class Meta:
        app_label = "mega_cluster"
        verbose_name = "database identity"

    def __str__(self) -> str:
        return self.uuid
