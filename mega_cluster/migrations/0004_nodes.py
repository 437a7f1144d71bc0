# The node registry's table and the unmanaged models of the admin's Locks and
# Queues pages (no tables: they carry the pages' permissions).
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("mega_cluster", "0003_events")]

    operations = [
        migrations.CreateModel(
            name="ClusterLock",
            fields=[
                (
                    "key",
                    models.CharField(max_length=512, primary_key=True, serialize=False),
                ),
            ],
            options={
                "verbose_name": "lock",
                "verbose_name_plural": "locks",
                "permissions": [
                    ("force_release_lock", "Can force-release a held lock")
                ],
                "managed": False,
                "default_permissions": ("view",),
            },
        ),
        migrations.CreateModel(
            name="ClusterQueue",
            fields=[
                (
                    "channel",
                    models.CharField(max_length=200, primary_key=True, serialize=False),
                ),
            ],
            options={
                "verbose_name": "queue",
                "verbose_name_plural": "queues",
                "permissions": [
                    ("retry_event", "Can retry a dead-lettered event"),
                    ("discard_event", "Can discard a dead-lettered event"),
                ],
                "managed": False,
                "default_permissions": ("view",),
            },
        ),
        migrations.CreateModel(
            name="Node",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True,
                        primary_key=True,
                        serialize=False,
                        verbose_name="ID",
                    ),
                ),
                ("app_name", models.CharField(max_length=50)),
                ("node_id", models.CharField(max_length=120)),
                ("host", models.CharField(blank=True, default="", max_length=255)),
                ("pid", models.IntegerField(default=0)),
                ("role", models.CharField(default="web", max_length=20)),
                ("version", models.CharField(blank=True, default="", max_length=50)),
                ("started_at", models.FloatField()),
                ("heartbeat_at", models.FloatField()),
                ("details", models.JSONField(blank=True, default=dict)),
            ],
            options={
                "verbose_name": "node",
                "verbose_name_plural": "nodes",
                "ordering": ["app_name", "node_id"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("app_name", "node_id"), name="mega_cluster_node_unique"
                    )
                ],
            },
        ),
    ]
