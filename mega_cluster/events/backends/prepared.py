"""Prepared statements for the ``database`` event queue on PostgreSQL.

Django's PostgreSQL backend binds parameters on the client and never prepares
(``prepare_threshold`` is None unless ``DATABASES[alias]["OPTIONS"]`` sets it), so
each statement is sent as text and parsed and planned again. The event queue runs a
few statements over and over: the enqueue, the claim, the success, the lease
renewal. Run prepared (server-side binding, ``prepare=True``: psycopg parses and
plans each one once per connection and keeps up to ``prepared_max`` of them), an
enqueue's round trip takes about a third less time on the server.

On by default where it is safe:

* PostgreSQL through psycopg 3 (psycopg2 has no prepared statements);
* not through a transaction pooler: an alias marked with
  ``DISABLE_SERVER_SIDE_CURSORS`` (what Django asks for behind PgBouncer in
  transaction mode) never prepares, as a statement prepared on one server
  connection is unknown on the next (PgBouncer before 1.21);
* not while Django logs queries (``DEBUG``, ``assertNumQueries``,
  ``CaptureQueriesContext``) or an ``execute_wrapper`` is installed (query
  counters, tracing): those statements go through Django's cursor, which they
  watch.

``OPTIONS["PREPARE"] = False`` turns it off (a pooler the check cannot see).

A migration that changes the type of a column a prepared statement returns makes
PostgreSQL refuse that statement on every connection that prepared it ("cached
plan must not change result type"): the backend then runs its statements
unprepared until the process restarts, and an autocommitted call is run again at
once (inside ``atomic()`` the error is raised: the transaction is lost anyway).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

from ...pooling import through_pooler

#: A threshold no statement of Django's reaches while it is set (the ORM's queries
#: never run in between: one thread per connection).
_ONLY_WHEN_ASKED = 1_000_000


def check_options(options: Mapping[str, Any]) -> list[str]:
    value = options.get("PREPARE", True)
    if not isinstance(value, bool):
        return [
            f"OPTIONS['PREPARE'] is {value!r}; it must be True (run the queue's "
            "statements prepared on PostgreSQL, the default) or False."
        ]
    return []


def plan_changed(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a prepared statement whose result
    columns changed type since it was prepared (a migration ran meanwhile)."""
    return "cached plan must not change result type" in str(exc)


def usable(alias: str, options: Mapping[str, Any]) -> bool:
    """Whether the queue's statements on ``alias`` run prepared."""
    if options.get("PREPARE", True) is not True or through_pooler(alias):
        return False
    if connections[alias].vendor != "postgresql":
        return False
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    return bool(is_psycopg3)


def execute(
    connection: BaseDatabaseWrapper, sql: str, params: list[Any]
) -> list[tuple[Any, ...]]:
    """``sql`` run prepared on ``connection`` (in its transaction, if any), as
    Django's cursor would run it: connected first, refused in a broken
    ``atomic()`` block, errors raised as Django's. Its rows."""
    import psycopg

    connection.ensure_connection()
    connection.validate_thread_sharing()
    connection.validate_no_broken_transaction()
    raw = connection.connection
    # Django turns preparing off for the whole connection (prepare_threshold
    # None, so that a pooler works); on only for this statement: the ORM's own
    # queries on the connection keep their setting.
    threshold = raw.prepare_threshold
    with connection.wrap_database_errors:
        try:
            if threshold is None:
                raw.prepare_threshold = _ONLY_WHEN_ASKED
            with psycopg.Cursor(raw) as cursor:
                cursor.execute(sql, params, prepare=True)
                # (the result's field count: ``description`` builds its columns)
                result = cursor.pgresult
                return (
                    cursor.fetchall() if result is not None and result.nfields else []
                )
        finally:
            raw.prepare_threshold = threshold
