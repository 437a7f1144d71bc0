"""The Celery backend's store: the ``database`` backend's table, with the
statements an event delivered by a broker needs.

Used as the store of :class:`~.backend.CeleryEventBackend`, never as a backend of
its own (it sends no messages; nothing claims from it by polling). On PostgreSQL
the happy path waits for no WAL flush but the outcome's: the publisher's row goes
in a lazily committed batch (``rows``), the consumer claims or creates the row in
one lazily committed statement, and the outcome is a flushed commit (shared by
handlers finishing together), which also flushes the claim.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from django.db import connections
from django.db.models.expressions import RawSQL
from django.utils import timezone

from ..base import ClaimedEvent, NewEvent, claimed_event
from ..database import DatabaseEventBackend
from ..database_sql import SERVER_EPOCH
from .protocol import EARLY, RESEND_BATCH
from .rows import RowWriter

#: A one-row FROM item that turns off the commit's WAL flush for the statement's own
#: (autocommit) transaction: ``set_config(..., is_local => true)`` lasts until that
#: transaction ends. Only for writes that a message restores or a later durable
#: commit flushes (WAL is written in order).
LAZY_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS mc_lazy"
_ROW_COLUMNS = (
    "id, app_name, channel, payload, status, attempts, failures, max_retries, "
    "timeout, available_at, lease_expires_at, claimed_by, last_error, created_at"
)


class CeleryStore(DatabaseEventBackend):
    """Events' rows, attempts, dedupe, stats and dead letters, as on the
    ``database`` backend (so they behave alike), for a broker-delivered queue."""

    circuit_name: ClassVar[str] = "event_queue:store"
    store_calls: ClassVar[tuple[str, ...]] = (
        *DatabaseEventBackend.store_calls,
        "lost",
        "write_rows",
        "forget",
        "has_row",
        "dead_channel",
        "rebury",
        "claim_one",
        "lean_row",
    )
    guarded: ClassVar[tuple[str, ...]] = store_calls
    listening: ClassVar[bool] = False  # the broker delivers
    parts: ClassVar[tuple[type, ...]] = ()

    def __init__(self, app: Any, options: Mapping[str, Any]) -> None:
        super().__init__(app, options)
        # The broker delivers: no LISTEN, no NOTIFY.
        self.notifies = False  # type: ignore[misc]
        self.send_notify = False
        #: Publishes' rows, inserted in batches by a writer thread (PostgreSQL).
        self.rows = RowWriter(self.alias, self.write_rows)
        self._done: list[list[Any]] = []
        self._done_lock = threading.Lock()
        self._completing = threading.Lock()

    def lost(self, channel: str, older_than: float) -> list[str]:
        """Events of ``channel`` a message should have run long ago: pending and due
        for ``older_than`` seconds, or running with a lease that lapsed that long
        ago (the broker redelivers a dead worker's message well before)."""
        since_sql, since = self.clock.at(-older_than)
        matching = [self.app.name, channel, since, RESEND_BATCH]
        rows = self._execute(
            f"SELECT id FROM ({self.takeable_sql(now=since_sql)}) AS overdue",
            matching * 2,
        )
        return [row[0] for row in rows]

    def write_rows(self, rows: list[list[Any]]) -> None:
        # One statement, one parameter: the rows travel as one JSON array (adapting
        # eight parameters per row cost the writer more than the insert itself),
        # committed lazily by the FROM item (no BEGIN/SET/COMMIT round trips).
        # A row's due time, of the publisher's clock, is written as the same
        # distance from the server's now (database_sql).
        self._execute(
            f"INSERT INTO {self.table} ({_ROW_COLUMNS}) SELECT r->>0, %s, r->>1, "
            "r->>2, 'pending', 0, 0, (r->>3)::int, (r->>4)::float8, "
            f"(r->>5)::float8 - %s + {SERVER_EPOCH}, NULL, '', '', "
            "to_timestamp((r->>6)::float8) "
            f"FROM json_array_elements(%s::json) AS r, {LAZY_COMMIT} "
            "ON CONFLICT (id) DO NOTHING",
            [self.app.name, time.time(), json.dumps(rows)],
        )

    def forget(self, event_id: str) -> None:
        """Delete a pending event whose message could not be sent."""
        self._objects().filter(id=event_id).delete()

    def has_row(self, event_id: str) -> bool:
        return self._objects().filter(id=event_id).exists()

    def dead_channel(self, event_id: str) -> str | None:
        """The channel of dead letter ``event_id`` (None: no such dead letter)."""
        return (
            self._objects()
            .filter(id=event_id, status="dead")
            .values_list("channel", flat=True)
            .first()
        )

    def rebury(self, event_id: str) -> None:
        """Undo :meth:`retry_dead` whose message could not be sent: a dead letter
        again (to be retried later) rather than pending with nothing to run it."""
        now = RawSQL(SERVER_EPOCH, ()) if self.clock.server else time.time()
        self._objects().filter(id=event_id, status="pending", attempts=0).update(
            status="dead", finished_at=now
        )

    def lazy_insert(self, event: NewEvent) -> bool:
        # A dedupe key's row stays a durable commit: the key's uniqueness must
        # survive a database crash, and the message cannot restore it.
        return event.dedupe_key is None and self.lazy()

    def lazy(self) -> bool:
        return (
            self.vendor == "postgresql" and not connections[self.alias].in_atomic_block
        )

    def claim_one(
        self,
        event_id: str,
        *,
        lease: float,
        first: tuple[str, str, Any] | None = None,
        lost: bool = False,
    ) -> ClaimedEvent | float | None:
        """Take the event a message names.

        Returns the claimed event; or, when it is running elsewhere under a live
        lease (a message redelivered while its first worker still runs, e.g. Redis'
        visibility timeout), the seconds until that lease lapses; or, when it is
        pending but not due yet (its retry is scheduled later), the seconds until
        it is; or ``None`` when it is finished, dead or gone (a duplicate message). A running event whose
        lease lapsed is taken: its worker died, and the lost attempt counts.

        ``first`` is ``(channel, payload, [max_retries, timeout])`` from a first
        message: when the event has no row yet (the publisher's row writer has not
        written it, or a database crash lost its lazy commit), it is written from
        that, already claimed. ``lost``: the message of a lean event, redelivered
        by the broker: a worker took it and died (or gave it back), and a row it
        never had is created with that attempt counted.
        """
        now_sql, now = self.clock.at()
        until_sql, until = self.clock.at(lease)
        early_sql, early = self.clock.at(EARLY)
        lazy = self.lazy()
        was: tuple[str] | None = None
        if first is not None and not lazy and lost:
            created = self._create_claimed(event_id, first, lease=lease, lost=lost)
            if created is not None:
                return created
        if first is not None and lazy:
            # Claim or create in one statement. It commits lazily: the outcome
            # that follows is a durable commit, and flushing the WAL up to that
            # record flushes this one too.
            channel, payload, (max_retries, timeout, *_) = first
            # ``old`` reads the row as it was before this statement (one snapshot):
            # a running one whose lease lapsed lost its attempt.
            rows = self._execute(
                f"WITH old AS (SELECT status FROM {self.table} WHERE id = %s) "
                f"INSERT INTO {self.table} AS e ({_ROW_COLUMNS}) "
                "SELECT %s, %s, %s, %s, 'running', %s, 0, %s, %s, "
                f"{now_sql}, {until_sql}, %s, '', %s "
                f"FROM {LAZY_COMMIT} ON CONFLICT (id) DO UPDATE SET "
                "status = 'running', attempts = e.attempts + 1, dedupe_key = NULL, "
                "lease_expires_at = EXCLUDED.lease_expires_at, "
                "claimed_by = EXCLUDED.claimed_by WHERE e.app_name = %s AND "
                f"((e.status = 'pending' AND e.available_at <= {early_sql}) OR "
                f"(e.status = 'running' AND e.lease_expires_at < {now_sql})) "
                "RETURNING e.id, e.channel, e.payload, e.attempts, e.max_retries, "
                "e.timeout, COALESCE((SELECT status = 'running' FROM old), %s)",
                [
                    event_id,
                    event_id,
                    self.app.name,
                    channel,
                    payload,
                    2 if lost else 1,
                    max_retries,
                    timeout,
                    now,
                    until,
                    self.app.node_id,
                    connections[self.alias].ops.adapt_datetimefield_value(
                        timezone.now()
                    ),
                    self.app.name,
                    early,
                    now,
                    lost,
                ],
            )
        else:
            from_lazy = f" FROM {LAZY_COMMIT}" if lazy else ""
            if self.vendor != "postgresql":
                # Before the claim (its RETURNING sees the new row only); writers
                # take turns on SQLite, so nothing runs in between.
                was = self._objects().filter(id=event_id).values_list("status").first()
            rows = self._execute(
                f"WITH old AS (SELECT status FROM {self.table} WHERE id = %s) "
                f"UPDATE {self.table} SET status = 'running', "
                "attempts = attempts + 1, dedupe_key = NULL, "
                f"lease_expires_at = {until_sql}, "
                f"claimed_by = %s{from_lazy} WHERE id = %s AND app_name = %s AND "
                f"(({self.table}.status = 'pending' AND available_at <= {early_sql}) "
                f"OR ({self.table}.status = 'running' AND "
                f"lease_expires_at < {now_sql})) "
                "RETURNING id, channel, payload, attempts, max_retries, timeout, "
                "(SELECT status = 'running' FROM old)",
                [
                    event_id,
                    until,
                    self.app.node_id,
                    event_id,
                    self.app.name,
                    early,
                    now,
                ],
            )
        if not rows:
            # Seconds until it is due or its lease lapses, by the deciding clock.
            now_sql, now = self.clock.at()
            found = self._execute(
                f"SELECT status, lease_expires_at - {now_sql}, available_at - "
                f"{now_sql} FROM {self.table} WHERE id = %s AND app_name = %s",
                [now, now, event_id, self.app.name],
            )
            if not found:
                return None
            status, lapses_in, due_in = found[0]
            if status == "pending" and due_in > EARLY:
                # Not due yet (a message that came early: handed back at a
                # shutdown, or a duplicate): look again when it is.
                return due_in
            if status != "running" or lapses_in is None:
                return None
            return max(0.0, lapses_in)
        return claimed_event(rows[0], None if was is None else was[0] == "running")

    def _create_claimed(
        self, event_id: str, first: tuple[str, str, Any], *, lease: float, lost: bool
    ) -> ClaimedEvent | None:
        """Where the claim cannot create in one statement (not PostgreSQL, or in
        an atomic block): insert a redelivered lean event's row already claimed,
        or ``None`` when it exists (the caller claims it). The other first
        messages' rows were committed before they were sent."""
        channel, payload, (max_retries, timeout, *_) = first
        event = ClaimedEvent(
            id=event_id,
            channel=channel,
            payload=payload,
            attempt=2 if lost else 1,
            max_retries=max_retries,
            timeout=timeout,
            lost=lost,
        )
        return event if self.lean_row(event, "running", lease=lease) else None

    def lean_row(
        self,
        event: ClaimedEvent,
        status: str,
        *,
        error: str = "",
        available_at: float | None = None,
        lease: float | None = None,
    ) -> bool:
        """Write the row of an event that had none (a lean one): ``running`` under
        a lease (committed lazily: a lost one is a message redelivered anyway),
        ``pending`` for a retry at ``available_at`` or ``dead``, after a failed
        attempt. False (and nothing written) when the event has a row already."""
        now_sql, now = self.clock.at()
        due_sql, due = (
            (now_sql, now) if available_at is None else self.clock.local(available_at)
        )
        until_sql, until = self.clock.at(lease or 0.0)
        running = status == "running"
        connection = connections[self.alias]
        lazy = f" FROM {LAZY_COMMIT}" if running and self.lazy() else ""
        # WHERE true: SQLite would read ON CONFLICT after a bare SELECT as a join.
        return bool(
            self._execute(
                f"INSERT INTO {self.table} ({_ROW_COLUMNS}, finished_at) SELECT %s, "
                f"%s, %s, %s, %s, %s, %s, %s, %s, {due_sql}, "
                f"CASE WHEN %s THEN {until_sql} END, %s, %s, %s, "
                f"CASE WHEN %s THEN {now_sql} END{lazy} "
                "WHERE true ON CONFLICT (id) DO NOTHING RETURNING id",
                [
                    event.id,
                    self.app.name,
                    event.channel,
                    event.payload,
                    status,
                    event.attempt,
                    0 if running else 1,
                    event.max_retries,
                    event.timeout,
                    due,
                    running and lease is not None,
                    until,
                    self.app.node_id if running else "",
                    error[:10_000],
                    connection.ops.adapt_datetimefield_value(timezone.now()),
                    status == "dead",
                    now,
                ],
            )
        )

    def renew(self, events: list[ClaimedEvent], *, lease: float) -> None:
        lazy = f" FROM {LAZY_COMMIT}" if self.lazy() else ""
        for event in events:
            until_sql, until = self.clock.at(lease)
            self._execute(
                f"UPDATE {self.table} SET lease_expires_at = {until_sql}{lazy} "
                f"WHERE id = %s AND {self.table}.status = 'running' "
                f"AND {self.table}.attempts = %s",
                [until, event.id, event.attempt],
            )

    def complete(self, event: ClaimedEvent) -> None:
        if self.vendor != "postgresql":
            super().complete(event)
            return
        # Group commit: threads finishing together share one durable UPDATE (the
        # first one in writes everyone's outcome that is waiting by then).
        entry = [event.id, event.attempt, False]
        with self._done_lock:
            self._done.append(entry)
        with self._completing:
            if entry[2] is False:
                with self._done_lock:
                    batch, self._done = self._done, []
                values = ", ".join(["(%s, %s)"] * len(batch))
                try:
                    self._execute(
                        f"UPDATE {self.table} AS e SET status = 'succeeded', "
                        f"finished_at = {SERVER_EPOCH}, lease_expires_at = NULL "
                        "FROM (VALUES "
                        f"{values}) AS v (id, attempts) WHERE e.id = v.id AND "
                        "e.status = 'running' AND e.attempts = v.attempts",
                        [*(x for item in batch for x in item[:2])],
                    )
                    outcome: Any = True
                except Exception as exc:
                    outcome = exc
                for item in batch:
                    item[2] = outcome
        outcome = entry[2]
        if isinstance(outcome, BaseException):
            raise outcome
