"""Drop the ``varchar_pattern_ops`` copies of the event and task-run primary keys
(PostgreSQL).

Django gives every ``CharField`` primary key on PostgreSQL a second index, for
``LIKE 'prefix%'`` lookups outside the C locale. Nothing looks these ids up with
``LIKE``, and every insert — and every update that moves a row (a claim, a
completion) — wrote that index too: an enqueue is 5–9 % faster without them
(docs/benchmarks-history.md). Other databases have no such index.
"""

from typing import Any

from django.db import migrations

TABLES = ("mega_cluster_event", "mega_cluster_task_run")


def drop_pattern_indexes(apps: Any, schema_editor: Any) -> None:
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = ANY(%s) AND indexdef LIKE %s",
            [list(TABLES), "%(id varchar_pattern_ops)"],
        )
        names = [row[0] for row in cursor.fetchall()]
    for name in names:
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


class Migration(migrations.Migration):
    dependencies = [
        ("mega_cluster", "0010_outbox"),
    ]

    operations = [
        migrations.RunPython(drop_pattern_indexes, migrations.RunPython.noop),
    ]
