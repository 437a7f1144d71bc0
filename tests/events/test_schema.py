"""The event and task-run tables on PostgreSQL carry the indexes their queries use
and no more: migration 0011 drops the ``varchar_pattern_ops`` copy of each primary
key that Django adds for ``LIKE`` lookups (none is made; every insert and every
row-moving update paid for it)."""

from __future__ import annotations

import pytest
from django.db import connections

from tests.databases import ON_POSTGRES

pytestmark = ON_POSTGRES


def _indexes(table: str) -> dict[str, str]:
    with connections["postgres"].cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE "
            "schemaname = current_schema() AND tablename = %s",
            [table],
        )
        return dict(cursor.fetchall())


@pytest.mark.parametrize("table", ["mega_cluster_event", "mega_cluster_task_run"])
def test_the_primary_key_has_no_pattern_index(table: str):
    indexes = _indexes(table)
    assert f"{table}_pkey" in indexes
    assert not [d for d in indexes.values() if "varchar_pattern_ops" in d], indexes
