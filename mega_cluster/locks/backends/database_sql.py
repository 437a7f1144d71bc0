"""The two statements of the database lock backend that the ORM cannot write.

On PostgreSQL and SQLite (with ``RETURNING``) a grant is one ``UPDATE ... RETURNING``
instead of an update and a read; on PostgreSQL a release and its ``pg_notify`` are
one statement, so the waiters of other processes are woken by the same round trip.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import connections
from django.utils import timezone

from . import db_time


def _table(connection: Any, model: Any) -> str:
    # Model._meta is Django's documented Options API (docs: "Model _meta API").
    return connection.ops.quote_name(model._meta.db_table)  # noqa: SLF001


def grant(
    alias: str,
    app_name: str,
    key: str,
    token: str,
    holder: str,
    waiter: str,
    ttl: float,
) -> int | None:
    """Take ``key`` when it is free or expired and no live waiter is ahead of
    ``waiter``; the new fence, or None when not granted."""
    from ...models import LockLease, LockWaiter

    connection = connections[alias]
    q = connection.ops.quote_name
    lease, queue = _table(connection, LockLease), _table(connection, LockWaiter)
    app = app_name
    now_args: list[Any]
    end_args: list[Any]
    if db_time.server_clock(alias):
        now_sql, now_args = "STATEMENT_TIMESTAMP()", []
        end_sql, end_args = (
            "STATEMENT_TIMESTAMP() + make_interval(secs => %s)",
            [ttl],
        )
    else:
        adapt = connection.ops.adapt_datetimefield_value
        local = timezone.now()
        now_sql, now_args = "%s", [adapt(local)]
        end_sql, end_args = "%s", [adapt(local + timedelta(seconds=ttl))]
    sql = (
        f"UPDATE {lease} SET {q('token')} = %s, {q('holder')} = %s, "
        f"{q('fence')} = {q('fence')} + 1, {q('acquired_at')} = {now_sql}, "
        f"{q('expires_at')} = {end_sql} "
        f"WHERE {q('app_name')} = %s AND {q('key')} = %s "
        f"AND ({q('token')} = '' OR {q('expires_at')} < {now_sql}) "
        f"AND NOT EXISTS (SELECT 1 FROM {queue} w WHERE w.{q('app_name')} = %s "
        f"AND w.{q('key')} = %s AND w.{q('deadline')} >= {now_sql} "
        f"AND w.{q('waiter')} <> %s AND w.{q('id')} < COALESCE("
        f"(SELECT m.{q('id')} FROM {queue} m WHERE m.{q('waiter')} = %s), "
        f"4611686018427387904)) "
        f"RETURNING {q('fence')}"
    )
    params: list[Any] = [token, holder, *now_args, *end_args, app, key, *now_args]
    params += [app, key, *now_args, waiter, waiter]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else int(row[0])


def release_and_notify(
    alias: str, app_name: str, key: str, token: str, channel: str
) -> int:
    """Free ``key`` held with ``token`` and ``pg_notify(channel)`` if it was
    (PostgreSQL only); the number of leases freed (0 or 1)."""
    from ...models import LockLease

    connection = connections[alias]
    q = connection.ops.quote_name
    sql = (
        f"WITH released AS (UPDATE {_table(connection, LockLease)} "
        f"SET {q('token')} = '', {q('holder')} = '', "
        f"{q('expires_at')} = STATEMENT_TIMESTAMP() "
        f"WHERE {q('app_name')} = %s AND {q('key')} = %s AND {q('token')} = %s "
        f"RETURNING 1) SELECT pg_notify(%s, '') FROM released"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [app_name, key, token, channel])
        return len(cursor.fetchall())
