"""Event queue in a Django model table (the embedded default).

Workers claim with one ``UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED)
RETURNING`` on PostgreSQL, so concurrent workers never wait for each other's rows;
SQLite runs the same statement without the locking clause (it serialises writers,
so a claim is atomic). Each claimed event is leased to its worker; a running
event whose lease lapsed (its worker died) is claimable again and the attempt
counter keeps counting. On PostgreSQL every publish sends ``NOTIFY`` in the same
statement and every node that consumes ``LISTEN``s (a node that only publishes,
such as a web node, does not), so consumers wake at once; other
databases rely on ``POLL_INTERVAL`` across processes. ``LISTEN`` uses
``OPTIONS["LISTEN_DATABASE"]`` (default ``DATABASE``); an alias marked as going
through a transaction pooler is never listened on (consumers poll).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any, ClassVar

from django.conf import settings
from django.db import (
    DatabaseError,
    IntegrityError,
    NotSupportedError,
    connections,
    transaction,
)
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from ...db_outage import translate
from . import prepared
from .base import ClaimedEvent, EventBackend, NewEvent, claimed_event
from .database_ops import StoreOperations, table
from .database_sql import COLUMNS, ClaimHook, ClaimStatements, Clock
from .listen import Listener

__all__ = ["DatabaseEventBackend", "claimed_event"]

logger = logging.getLogger("mega_cluster.events.database")


def _model():
    from ...models import QueuedEvent

    return QueuedEvent


class DatabaseEventBackend(ClaimStatements, StoreOperations, EventBackend):
    leases: ClassVar[bool] = True
    #: Whether it LISTENs for publishes (its :class:`Listener` reads its options).
    listening: ClassVar[bool] = True
    parts: ClassVar[tuple[type, ...]] = (Listener,)
    writes_in_transaction: ClassVar[bool] = True
    supports_listing: ClassVar[bool] = True
    #: The methods that reach the database: an outage's Django error becomes
    #: ``BackendUnavailable`` (:mod:`mega_cluster.db_outage`), which the circuit
    #: counts. The consumer's calls run through the circuit too: while it is open
    #: they fail at once, and the consumer keeps trying at its own pace.
    store_calls: ClassVar[tuple[str, ...]] = (
        *EventBackend.guarded,
        "enqueue_with",
        "run_statement",
        "claim",
        "next_due",
        "renew",
        "hold",
        "complete",
        "retry",
        "bury",
        "release",
        "prune",
        "add_tally",
        "oldest_pending",
    )
    guarded: ClassVar[tuple[str, ...]] = store_calls

    def __init__(self, app: Any, options: Mapping[str, Any]) -> None:
        self.alias: str = dict(options).get("DATABASE", "default")
        what = f"{type(self).__name__} of app {getattr(app, 'name', '?')!r}"
        # Before the circuit's guard wraps them (Backend.__init__).
        for name in self.store_calls:
            method = translate(self.alias, what, getattr(self, name), self._outages)
            setattr(self, name, method)
        super().__init__(app, options)
        self.table = connections[self.alias].ops.quote_name(table(_model()))
        self.vendor = connections[self.alias].vendor
        #: Whose clock decides (the database server's on PostgreSQL).
        self.clock = Clock(self.vendor)
        # LISTEN needs psycopg 3 (Django may run on psycopg2): else poll.
        self.notifies = (  # type: ignore[misc]
            self.vendor == "postgresql"
            and importlib.util.find_spec("psycopg") is not None
        )
        self.pg_channel = f"mc_events_{app.name}"
        #: NOTIFY on publish (off for the Celery backend, whose broker delivers).
        self.send_notify = self.vendor == "postgresql"
        self._listener = Listener(self.options, self.alias, self.pg_channel, self.wake)
        self._claim_hooks: dict[str, ClaimHook] = {}
        #: Whether its statements run prepared (``OPTIONS["PREPARE"]``, see
        #: :mod:`.prepared`): PostgreSQL on psycopg 3, not through a pooler.
        self.prepares: bool = prepared.usable(self.alias, self.options)
        self._listen_lock = threading.Lock()
        self._started = False
        if self._listener.pooled:  # it would hear nothing there: poll
            self.notifies = False  # type: ignore[misc]

    def _outages(self) -> int:
        return self.circuit.opened_count

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        alias = options.get("DATABASE", "default")
        if alias not in settings.DATABASES:
            return [
                f"OPTIONS['DATABASE'] is {alias!r}, which is not a DATABASES alias "
                f"(have {', '.join(settings.DATABASES) or 'none'})."
            ]
        problems = prepared.check_options(options)
        if cls.listening:
            problems += Listener.check_options(options, alias)
        return problems

    def transaction_alias(self) -> str:
        return self.alias

    def takes_claim_hooks(self) -> bool:
        """Whether :meth:`add_claim_hook` hooks run (one statement: PostgreSQL)."""
        return self.vendor == "postgresql"

    def _objects(self):
        return _model().objects.using(self.alias).filter(app_name=self.app.name)

    def _execute(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        connection = connections[self.alias]
        try:
            rows = self._execute_prepared(connection, sql, params)
            if rows is not None:
                return rows
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchall() if cursor.description else []
        except DatabaseError:
            # A broken connection stays broken in a long-lived thread: drop it so
            # the next call reconnects.
            if connection.connection is not None and not connection.is_usable():
                connection.close()
            raise

    def _execute_prepared(
        self, connection: BaseDatabaseWrapper, sql: str, params: list[Any]
    ) -> list[tuple[Any, ...]] | None:
        """``sql``'s rows, run prepared (see :mod:`.prepared`); None when it is to
        run through Django's cursor instead."""
        if (
            not self.prepares
            or connection.queries_logged
            or connection.execute_wrappers
        ):
            return None
        try:
            return prepared.execute(connection, sql, params)
        except NotSupportedError as exc:
            if not prepared.plan_changed(exc):
                raise
            # A migration changed a column a prepared statement returns (it fails
            # on every connection that prepared it): from now on unprepared, as
            # Django runs them; once more at once outside a transaction (inside,
            # the transaction is lost).
            self.prepares = False
            logger.warning(
                "event queue on database %r: a prepared statement's result type "
                "changed (a migration ran); its statements run unprepared until "
                "this process restarts",
                self.alias,
            )
            if connection.in_atomic_block:
                raise
            return None

    # publishing -------------------------------------------------------------------

    def insert_statement(self, event: NewEvent) -> tuple[str, list[Any]]:
        """The ``INSERT`` that stores ``event``, and its parameters."""
        connection = connections[self.alias]
        created = connection.ops.adapt_datetimefield_value(timezone.now())
        due_sql, due = self.clock.local(event.available_at)
        insert = (
            f"INSERT INTO {self.table} (id, app_name, channel, payload, status, "
            "attempts, failures, max_retries, timeout, dedupe_key, available_at, "
            "claimed_by, last_error, created_at) VALUES "
            f"(%s, %s, %s, %s, 'pending', 0, 0, %s, %s, %s, {due_sql}, '', '', %s)"
        )
        params = [
            event.id,
            self.app.name,
            event.channel,
            event.payload,
            event.max_retries,
            event.timeout,
            event.dedupe_key,
            due,
            created,
        ]
        return insert, params

    def _notifying(
        self, event: NewEvent, before: tuple[str, list[Any]] | None = None
    ) -> tuple[str, list[Any]]:
        """One statement: ``before`` (a write of the caller's), the insert, and
        on PostgreSQL the ``NOTIFY`` (sent when the transaction commits)."""
        sql, params = self.insert_statement(event)
        if not self.send_notify and before is None:
            return sql, params
        ctes, all_params = [], []
        if before is not None:
            ctes.append(f"pre AS ({before[0]})")
            all_params += before[1]
        ctes.append(f"ins AS ({sql} RETURNING id)")
        all_params += params
        if self.send_notify:
            tail = "SELECT pg_notify(%s, %s) FROM ins"
            all_params += [self.pg_channel, event.channel]
        else:
            tail = "SELECT id FROM ins"
        return f"WITH {', '.join(ctes)} {tail}", all_params

    def enqueue(self, event: NewEvent) -> str:
        insert, params = self._notifying(event)
        connection = connections[self.alias]
        # In the caller's transaction a duplicate key must not abort it
        # (PostgreSQL): a savepoint, needed only when a dedupe key can collide.
        savepoint = connection.in_atomic_block and event.dedupe_key is not None
        try:
            with transaction.atomic(using=self.alias) if savepoint else nullcontext():
                self._execute(insert, params)
        except IntegrityError:
            if event.dedupe_key is None:
                raise
            existing = (
                self._objects()
                .filter(channel=event.channel, dedupe_key=event.dedupe_key)
                .values_list("id", flat=True)
                .first()
            )
            if existing is None:  # claimed in between: the key is free again
                return self.enqueue(event)
            return existing
        # visible to local consumers once committed
        transaction.on_commit(lambda: self.wake(event.channel), using=self.alias)
        return event.id

    def enqueue_with(self, event: NewEvent, before: tuple[str, list[Any]]) -> str:
        """Store ``event`` (no dedupe key) together with ``before``, a write of the
        caller's on this backend's database (SQL and parameters): one statement on
        PostgreSQL (one round trip, autocommitted outside ``atomic()``), one
        transaction elsewhere. Both are stored or neither."""
        if event.dedupe_key is not None:
            raise ValueError("enqueue_with() takes events without a dedupe key.")
        if self.vendor == "postgresql":
            self._execute(*self._notifying(event, before))
        else:  # no data-modifying WITH: one transaction
            with transaction.atomic(using=self.alias):
                self._execute(*before)
                self._execute(*self._notifying(event))
        transaction.on_commit(lambda: self.wake(event.channel), using=self.alias)
        return event.id

    def _notify(self, channel: str) -> None:
        if self.send_notify:
            self._execute("SELECT pg_notify(%s, %s)", [self.pg_channel, channel])
        self.wake(channel)

    # consuming ------------------------------------------------------------------

    def add_claim_hook(self, channel: str, hook: ClaimHook) -> None:
        """Make ``hook``'s write part of every claim of ``channel`` (PostgreSQL
        only: elsewhere a hook is never called, see :meth:`takes_claim_hooks`)."""
        self._claim_hooks[channel] = hook

    def claim(self, channel: str, limit: int, *, lease: float) -> list[ClaimedEvent]:
        hook = self._claim_hooks.get(channel)
        if hook is not None and self.takes_claim_hooks():
            rows = self._execute(
                *self.hooked_claim_statement(channel, limit, lease=lease, hook=hook)
            )
            width = len(COLUMNS.split(", ")) + 1
            events = [claimed_event(row[:width]) for row in rows]
            hook.claimed(
                [
                    (e.id, e.attempt, row[width:] if row[width] is not None else None)
                    for e, row in zip(events, rows, strict=True)
                ]
            )
            return events
        claimed: list[ClaimedEvent] = []
        for sql, params in self.claim_statements(channel, limit, lease=lease):
            if len(claimed) >= limit:
                break
            params[-1] = limit - len(claimed)
            claimed += [claimed_event(row) for row in self._execute(sql, params)]
        return claimed

    def next_due(self, channel: str) -> float | None:
        rows = self._execute(*self.next_due_statement(channel))
        due = [x for x in rows[0] if x is not None] if rows else []
        return time.time() + min(due) if due else None

    def _guard(self) -> str:
        return "WHERE id = %s AND status = 'running' AND attempts = %s"

    def renew(self, events: list[ClaimedEvent], *, lease: float) -> None:
        for event in events:
            until_sql, until = self.clock.at(lease)
            self._execute(
                f"UPDATE {self.table} SET lease_expires_at = {until_sql} "
                f"{self._guard()}",
                [until, event.id, event.attempt],
            )

    def hold_statement(
        self, event_id: str, attempt: int, *, lease: float | None
    ) -> tuple[str, list[Any]]:
        """The statement of :meth:`hold` (``RETURNING id`` when the attempt holds
        the event; its lease extended by ``lease`` seconds), or with ``lease``
        None a ``SELECT id … FOR UPDATE`` of the held event (the row locked until
        the transaction ends, the lease left as it is)."""
        # Lapsed or not, by the deciding clock (database_sql).
        now_sql, now = self.clock.at()
        guard = f"{self._guard()} AND lease_expires_at >= {now_sql}"
        if lease is None:
            return (
                f"SELECT id FROM {self.table} {guard} FOR UPDATE",
                [event_id, attempt, now],
            )
        until_sql, until = self.clock.at(lease)
        return (
            f"UPDATE {self.table} SET lease_expires_at = {until_sql} {guard} "
            "RETURNING id",
            [until, event_id, attempt, now],
        )

    def hold(self, event_id: str, attempt: int, *, lease: float) -> bool:
        return bool(self._execute(*self.hold_statement(event_id, attempt, lease=lease)))

    def complete_statement(self, event_id: str, attempt: int) -> tuple[str, list[Any]]:
        """The statement of :meth:`complete` (it ends with its ``WHERE`` clause:
        a caller may add ``AND`` conditions)."""
        now_sql, now = self.clock.at()
        return (
            f"UPDATE {self.table} SET status = 'succeeded', finished_at = {now_sql}, "
            f"lease_expires_at = NULL {self._guard()}",
            [now, event_id, attempt],
        )

    def complete(self, event: ClaimedEvent) -> None:
        self._execute(*self.complete_statement(event.id, event.attempt))

    def run_statement(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        """Run one statement a part built on this queue composed with the
        statements above (``mega_cluster.tasks``: a result row's write fenced by
        the event's lease); an outage counts as the store's, as for every call
        here. Its rows."""
        return self._execute(sql, params)

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        (due_sql, when), error = self.clock.local(available_at), error[:10_000]
        self._execute(
            f"UPDATE {self.table} SET status = 'pending', available_at = {due_sql}, "
            "failures = failures + 1, last_error = %s, lease_expires_at = NULL, "
            f"claimed_by = '' {self._guard()}",
            [when, error, event.id, event.attempt],
        )
        self.wake(event.channel)

    def bury(self, event: ClaimedEvent, error: str) -> None:
        now_sql, now = self.clock.at()
        self._execute(
            f"UPDATE {self.table} SET status = 'dead', finished_at = {now_sql}, "
            "failures = failures + 1, last_error = %s, lease_expires_at = NULL "
            f"{self._guard()}",
            [now, error[:10_000], event.id, event.attempt],
        )

    def release(self, event: ClaimedEvent) -> None:
        self._execute(
            f"UPDATE {self.table} SET status = 'pending', attempts = attempts - 1, "
            f"lease_expires_at = NULL, claimed_by = '' {self._guard()}",
            [event.id, event.attempt],
        )
        self._notify(event.channel)

    # notifications ----------------------------------------------------------------

    # The listener runs only while the backend is started and a consumer waits for
    # wake-ups: a node that only publishes (a web node) would otherwise be sent
    # every NOTIFY of the cluster and answer each with a query.

    def start(self) -> None:
        with self._listen_lock:
            self._started = True
            self._listen()

    def stop(self) -> None:
        with self._listen_lock:
            self._started = False
            self._listener.stop()

    def add_waker(self, callback: Callable[[str | None], None]) -> None:
        with self._listen_lock:
            super().add_waker(callback)
            self._listen()

    def remove_waker(self, callback: Callable[[str | None], None]) -> None:
        with self._listen_lock:
            super().remove_waker(callback)
            if not self._wakers:
                self._listener.stop()

    def _listen(self) -> None:
        if self._started and self._wakers and self.notifies:
            self._listener.start()

    @property
    def listener_running(self) -> bool:
        """Whether this node's ``LISTEN`` thread runs (started, with a consumer)."""
        return self._listener.running
