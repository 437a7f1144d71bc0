"""Telling a database outage from an error of the statement, for the stores that
live in a Django database (the ``database`` event backend, the Celery backend's
store).

An outage (the server is down, restarting, refusing connections, the connection
was cut) becomes :class:`~mega_cluster.exceptions.BackendUnavailable` (the Django
error as ``__cause__``), which the store's circuit counts
(:mod:`mega_cluster.circuit`). Everything else keeps its Django class and is not
counted: ``IntegrityError`` (a dedupe key taken), ``DataError`` (a value the
column cannot hold), ``ProgrammingError`` (a statement in a transaction that
already failed, a missing table), lock or serialization conflicts, a cancelled
statement.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connections

from .exceptions import BackendUnavailable

F = TypeVar("F", bound=Callable[..., Any])

#: SQLSTATE classes and codes (PostgreSQL) of errors that mean the server cannot
#: serve us: connection exceptions, too many connections / out of memory or disk,
#: the server shutting down, restarting or not accepting connections yet, system
#: errors (I/O).
OUTAGE_SQLSTATES = ("08", "53", "57P01", "57P02", "57P03", "58")
#: SQLite messages of an OperationalError that is an outage (the file cannot be
#: opened or read); its other OperationalErrors ("database is locked", "no such
#: table", a syntax error) are not.
SQLITE_OUTAGES = ("unable to open", "disk i/o error")


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a Django database error (psycopg 3 or psycopg2), or None."""
    cause = exc.__cause__ or exc
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    return code if isinstance(code, str) else None


def is_outage(exc: BaseException, vendor: str = "") -> bool:
    """True when ``exc`` (a Django database error) says the database server cannot
    be reached or cannot serve, False for an error of the statement or its data."""
    if isinstance(exc, InterfaceError):  # the connection is closed or broken
        return True
    if not isinstance(exc, OperationalError):
        return False
    if vendor == "sqlite":
        return any(text in str(exc).lower() for text in SQLITE_OUTAGES)
    code = sqlstate(exc)
    if code is None:  # no answer from a server: connecting failed, the link broke
        return True
    return code.startswith(OUTAGE_SQLSTATES)


#: Per Django connection (one per thread and alias): how many outages its store
#: had seen when this connection was last used.
_seen: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def translate(
    alias: str, what: str, method: F, outages: Callable[[], int] | None = None
) -> F:
    """``method`` raising ``BackendUnavailable`` instead of an outage's Django
    error (see :func:`is_outage`); ``what`` names the store in the message. Outside
    an atomic block the broken connection is closed, so the next call of this
    thread reconnects (a long-lived thread has no request end that would).

    ``outages()`` counts the store's outages (its circuit's openings): a
    connection of this thread opened before the last one is closed before the
    call, since the outage most likely broke it, so the first call after an
    outage does not fail on it."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        if outages is not None:
            _drop_if_stale(connections[alias], outages())
        try:
            return method(*args, **kwargs)
        except DatabaseError as exc:
            connection = connections[alias]
            if not is_outage(exc, connection.vendor):
                raise
            if not connection.in_atomic_block:
                with contextlib.suppress(DatabaseError):
                    connection.close()
            raise BackendUnavailable(
                f"{what} cannot reach database {alias!r}: {exc}"
            ) from exc

    return call  # type: ignore[return-value]


def _drop_if_stale(connection: Any, outages: int) -> None:
    if connection.in_atomic_block:
        return
    if connection.connection is not None and _seen.get(connection, outages) != outages:
        with contextlib.suppress(DatabaseError):
            connection.close()
    _seen[connection] = outages
