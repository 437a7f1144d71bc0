"""The task results: ``TaskRun`` rows, and the fenced writes of an attempt.

Every write an attempt makes (its start, its outcome) is one transaction on the
event queue's database (:meth:`EventBackend.transaction_alias`) that first asks
the event backend whether the attempt still holds its event
(:meth:`EventBackend.hold`: running this attempt, lease not lapsed; the lease is
extended) and locks the row, whose ``attempt`` must be this attempt's. An attempt
that lost its lease (its worker froze past the lease, another node took the event)
writes nothing: :class:`LeaseLost`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from functools import cache, cached_property
from typing import TYPE_CHECKING, Any, TypeGuard

from django.db import connections, transaction
from django.utils import timezone

from ..events.backends.database import DatabaseEventBackend
from ..exceptions import EventQueueError

if TYPE_CHECKING:
    from ..events.backends.base import EventBackend
    from ..models import TaskRun

FINAL = ("SUCCESSFUL", "FAILED")


class LeaseLost(EventQueueError):
    """The attempt no longer holds its event (its lease lapsed or another attempt
    took it): its result was not written."""


def _model() -> type[TaskRun]:
    from ..models import TaskRun

    return TaskRun


def rows(alias: str) -> Any:
    return _model().objects.using(alias)


def new_row(**fields: Any) -> TaskRun:
    """An unsaved row."""
    return _model()(**fields)


@cache
def _fields() -> tuple[Any, ...]:
    """The model's columns, in field order (built once: enqueues and attempts
    read them on every call)."""
    return tuple(_model().objects.none().query.get_meta().concrete_fields)


def _start_sql(table: str, attempt: str) -> tuple[str, str]:
    """The ``SET`` and the ``WHERE`` conditions of an attempt's start, what
    :meth:`Fence.start` decides in Python: ``RUNNING``, the attempt's number
    (``attempt``, its SQL), this worker appended; never a task that succeeded or
    whose final failure an earlier attempt recorded. Parameters of the ``SET``
    after ``attempt``'s own: now, now, the worker id. The start is never recorded
    before the enqueue or the run_after (``GREATEST`` skips a NULL): a statement
    is built before it runs, and a claim may take a task that became due or was
    committed in between."""
    due = f"{table}.enqueued_at, {table}.run_after"
    return (
        f"status = 'RUNNING', attempt = {attempt}, started_at = "
        f"COALESCE({table}.started_at, GREATEST(%s, {due})), last_attempted_at = "
        f"GREATEST(%s, {due}), finished_at = NULL, worker_ids = "
        f"{table}.worker_ids || jsonb_build_array(%s::text)",
        f"{table}.status <> 'SUCCESSFUL' AND NOT ({table}.status = 'FAILED' AND "
        f"{table}.attempt < {attempt})",
    )


@dataclass(frozen=True)
class _Shape:
    """The table's SQL names as one database vendor quotes them (built once)."""

    table: str
    #: The columns, in field order (as ``INSERT`` lists them).
    columns: str
    #: Every column qualified by the table (as ``RETURNING`` lists them).
    returning: str


_shapes: dict[str, _Shape] = {}


def _shape(alias: str) -> _Shape:
    connection = connections[alias]
    shape = _shapes.get(connection.vendor)
    if shape is None:
        quote = connection.ops.quote_name
        table = quote(_model().objects.none().query.get_meta().db_table)
        columns = [quote(f.column) for f in _fields()]
        shape = _shapes[connection.vendor] = _Shape(
            table=table,
            columns=", ".join(columns),
            returning=", ".join(f"{table}.{c}" for c in columns),
        )
    return shape


def _table(alias: str) -> str:
    return _shape(alias).table


def insert_statement(alias: str, row: TaskRun) -> tuple[str, list[Any]]:
    """The ``INSERT`` of a new (unsaved) row, and its parameters: what
    ``row.save()`` would send, as one statement to compose with the event's
    (:meth:`DatabaseEventBackend.enqueue_with`)."""
    connection = connections[alias]
    fields = _fields()
    shape = _shape(alias)
    marks = ", ".join(["%s"] * len(fields))
    params = [f.get_db_prep_save(f.pre_save(row, True), connection) for f in fields]
    return f"INSERT INTO {shape.table} ({shape.columns}) VALUES ({marks})", params


def _from_db(alias: str, values: tuple[Any, ...]) -> TaskRun:
    """A row from a statement's ``RETURNING`` of every column (in field order)."""
    connection = connections[alias]
    fields = _fields()
    loaded = []
    for f, value in zip(fields, values, strict=True):
        for convert in f.get_db_converters(connection):
            value = convert(value, f, connection)
        loaded.append(value)
    return _model().from_db(alias, [f.attname for f in fields], loaded)


def one_statement(events: EventBackend) -> TypeGuard[DatabaseEventBackend]:
    """Whether an attempt's writes are single statements composed with the
    event's (a data-modifying ``WITH`` on PostgreSQL, the event a row of the same
    database): one round trip and one commit each, instead of a transaction."""
    return isinstance(events, DatabaseEventBackend) and events.vendor == "postgresql"


#: :meth:`StartOnClaim.take` found no row started by the claim.
NOT_STARTED: Any = object()
#: Rows started by claims and not yet taken, kept at most (a claimed event that
#: never runs, e.g. handed back at shutdown, leaves its row here).
STARTED_KEPT = 10_000


class StartOnClaim:
    """The claim hook of a task channel (``DatabaseEventBackend.add_claim_hook``,
    PostgreSQL): the claimed tasks' rows start — ``RUNNING``, this attempt's
    number, this worker appended — in the claim's own statement, so an attempt's
    start costs no statement; the handler takes its row from here. The start is
    what :meth:`Fence.start` writes: a task that succeeded, or whose final failure
    an earlier attempt recorded, does not start (None)."""

    def __init__(self, alias: str, worker_id: str) -> None:
        self.alias = alias
        self.worker_id = worker_id
        self._rows: OrderedDict[tuple[str, int], tuple[Any, ...] | None] = OrderedDict()
        self._lock = threading.Lock()

    def sql(self, claimed: str) -> tuple[str, list[Any]]:
        table = _table(self.alias)
        now = timezone.now()
        start, startable = _start_sql(table, f"{claimed}.attempts")
        return (
            f"UPDATE {table} SET {start} FROM {claimed} WHERE {table}.id = "
            f"{claimed}.id AND {startable} RETURNING {_shape(self.alias).returning}",
            [now, now, self.worker_id],
        )

    def claimed(self, rows: list[tuple[str, int, tuple[Any, ...] | None]]) -> None:
        with self._lock:
            for event_id, attempt, values in rows:
                self._rows[(event_id, attempt)] = values
            while len(self._rows) > STARTED_KEPT:
                self._rows.popitem(last=False)

    def take(self, event_id: str, attempt: int) -> TaskRun | None:
        """The row the claim of this attempt started (None: not to run), or
        :data:`NOT_STARTED` when no claim here started it."""
        with self._lock:
            values = self._rows.pop((event_id, attempt), NOT_STARTED)
        if values is NOT_STARTED or values is None:
            return values
        return _from_db(self.alias, values)


@dataclass(frozen=True)
class Fence:
    """One attempt's claim on its result row: the event backend that leases the
    event, the database of the rows, the event (= result) id and attempt."""

    events: EventBackend
    alias: str
    id: str
    attempt: int
    lease: float

    def _locked(self) -> TaskRun | None:
        """The row, locked until the transaction ends, if the attempt still holds
        its event; None otherwise."""
        if not self.events.hold(self.id, self.attempt, lease=self.lease):
            return None
        return rows(self.alias).select_for_update().filter(id=self.id).first()

    @cached_property
    def fused(self) -> DatabaseEventBackend | None:
        """The event backend when the writes are single statements
        (:func:`one_statement`)."""
        return self.events if one_statement(self.events) else None

    def _returning(self) -> str:
        return _shape(self.alias).returning

    def start(self, worker_id: str) -> TaskRun | None:
        """Take the row for this attempt (``RUNNING``, this worker appended);
        None when the attempt must not run the task: it lost its event, the row is
        gone, the task already succeeded, or a final failure was recorded by an
        earlier attempt (a dead letter retried from the admin starts again at
        attempt 1 and runs)."""
        if self.fused is not None:
            return self._start_fused(self.fused, worker_id)
        with transaction.atomic(using=self.alias):
            row = self._locked()
            if row is None or row.status == "SUCCESSFUL":
                return None
            if row.status == "FAILED" and self.attempt > row.attempt:
                return None
            now = timezone.now()
            row.status = "RUNNING"
            row.attempt = self.attempt
            row.started_at = row.started_at or now
            row.last_attempted_at = now
            row.finished_at = None
            row.worker_ids = [*row.worker_ids, worker_id]
            row.save(
                update_fields=[
                    "status",
                    "attempt",
                    "started_at",
                    "last_attempted_at",
                    "finished_at",
                    "worker_ids",
                ]
            )
            return row

    def _start_fused(
        self, events: DatabaseEventBackend, worker_id: str
    ) -> TaskRun | None:
        # One statement: the event's hold (its lease extended), then the row's
        # start, only for a held event (the UPDATE locks the row).
        held, held_params = events.hold_statement(
            self.id, self.attempt, lease=self.lease
        )
        table = _table(self.alias)
        now = timezone.now()
        start, startable = _start_sql(table, "%s")
        sql = (
            f"WITH held AS ({held}) UPDATE {table} SET {start} FROM held WHERE "
            f"{table}.id = held.id AND {startable} RETURNING {self._returning()}"
        )
        found = events.run_statement(
            sql, [*held_params, self.attempt, now, now, worker_id, self.attempt]
        )
        return _from_db(self.alias, found[0]) if found else None

    def finish(
        self,
        status: str,
        *,
        return_value: Any = None,
        error: dict[str, str] | None = None,
    ) -> TaskRun:
        """Record this attempt's outcome: ``SUCCESSFUL`` with ``return_value``,
        ``READY`` (failed, retried) or ``FAILED`` (final) with ``error``. Raises
        :class:`LeaseLost` (nothing written) when the attempt lost its event."""
        with transaction.atomic(using=self.alias):
            row = self._locked()
            if row is None or row.attempt != self.attempt or row.status != "RUNNING":
                raise self._lost()
            row.status = status
            if status == "SUCCESSFUL":
                row.return_value = return_value
            if error is not None:
                row.errors = [*row.errors, error]
            if status in FINAL:
                row.finished_at = timezone.now()
            row.save(update_fields=["status", "return_value", "errors", "finished_at"])
            return row

    def _lost(self) -> LeaseLost:
        return LeaseLost(
            f"task {self.id}: attempt {self.attempt} lost its lease; its "
            "result was not written (another attempt runs the task)."
        )

    def succeed(self, return_value: Any) -> tuple[TaskRun, bool]:
        """Record this attempt's success (as :meth:`finish`); with single
        statements (:func:`one_statement`) the event's success is written in the
        same statement, and the second value is True: the event queue has nothing
        left to write. Raises :class:`LeaseLost` (nothing written) when the
        attempt lost its event."""
        events = self.fused
        if events is None:
            return self.finish("SUCCESSFUL", return_value=return_value), False
        held, held_params = events.hold_statement(self.id, self.attempt, lease=None)
        complete, complete_params = events.complete_statement(self.id, self.attempt)
        table = _table(self.alias)
        field = next(f for f in _fields() if f.name == "return_value")
        connection = connections[self.alias]
        # The event row locked first (held), the result written only for a held
        # event and this attempt's running row, the event completed only when
        # the result was written: all or nothing, one commit.
        sql = (
            f"WITH held AS ({held}), done AS (UPDATE {table} SET "
            "status = 'SUCCESSFUL', return_value = %s, finished_at = %s FROM held "
            f"WHERE {table}.id = held.id AND {table}.attempt = %s AND "
            f"{table}.status = 'RUNNING' RETURNING {self._returning()}), "
            f"settled AS ({complete} AND EXISTS (SELECT 1 FROM done) RETURNING 1) "
            "SELECT * FROM done"
        )
        found = events.run_statement(
            sql,
            [
                *held_params,
                field.get_db_prep_save(return_value, connection),
                timezone.now(),
                self.attempt,
                *complete_params,
            ],
        )
        if not found:
            raise self._lost()
        return _from_db(self.alias, found[0]), True


def fail_lost(alias: str, task_id: str, error: dict[str, str]) -> TaskRun | None:
    """Record a final failure for a task whose last attempt was lost (the event
    was dead-lettered without running again); None when the row is final (or
    gone), else the row."""
    with transaction.atomic(using=alias):
        row = rows(alias).select_for_update().filter(id=task_id).first()
        if row is None or row.status in FINAL:
            return None
        row.status = "FAILED"
        row.errors = [*row.errors, error]
        row.finished_at = timezone.now()
        row.save(update_fields=["status", "errors", "finished_at"])
        return row
