from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("mega_cluster", "0009_schedules"),
    ]

    operations = [
        migrations.CreateModel(
            name="OutboxMessage",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("app_name", models.CharField(max_length=50)),
                (
                    "kind",
                    models.CharField(
                        choices=[("sync", "sync"), ("event", "event")], max_length=5
                    ),
                ),
                ("channel", models.CharField(max_length=200)),
                ("seq", models.BigIntegerField(blank=True, null=True)),
                ("node", models.CharField(max_length=120)),
                ("payload", models.TextField()),
                ("created_at", models.FloatField()),
                ("sent_at", models.FloatField(blank=True, null=True)),
                ("attempts", models.PositiveIntegerField(default=0)),
            ],
            options={
                "verbose_name": "outbox message",
                "verbose_name_plural": "outbox",
                "db_table": "mega_cluster_outbox",
                "ordering": ["id"],
                "indexes": [
                    models.Index(
                        condition=models.Q(("sent_at__isnull", True)),
                        fields=["app_name", "created_at"],
                        name="mega_cluster_outbox_unsent",
                    ),
                    models.Index(fields=["created_at"], name="mega_cluster_outbox_age"),
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("kind", "sync")),
                        fields=("app_name", "channel", "seq"),
                        name="mega_cluster_outbox_seq",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SyncCursor",
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
                ("receiver", models.CharField(max_length=120)),
                ("channel", models.CharField(max_length=200)),
                ("last", models.BigIntegerField(default=0)),
            ],
            options={
                "verbose_name": "sync cursor",
                "db_table": "mega_cluster_sync_cursor",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("app_name", "receiver", "channel"),
                        name="mega_cluster_sync_cursor_key",
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SyncSequence",
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
                ("channel", models.CharField(max_length=200)),
                ("last", models.BigIntegerField(default=0)),
            ],
            options={
                "verbose_name": "sync sequence",
                "db_table": "mega_cluster_sync_sequence",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("app_name", "channel"),
                        name="mega_cluster_sync_sequence_key",
                    )
                ],
            },
        ),
    ]
