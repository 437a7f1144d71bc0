"""Event queue on Celery: the broker delivers, the database keeps the books.

Each event is a row of the ``database`` backend's table (the shared store for
attempts, dedupe, stats and dead letters, so they behave as on the other backends)
plus one message of the generic task ``mega_cluster.events.deliver`` on a queue per
channel (``<QUEUE_PREFIX><channel>``, default prefix ``mc.<app name>.``). The task
is acks-late and rejected on worker loss, so a message whose worker died is
redelivered by the broker; the row's attempt counter counts the lost attempt. The
row is leased while its handler runs (renewed every ``LEASE/3``): a message that
arrives while the event runs elsewhere under a live lease (Redis' visibility
timeout) is put back until the lease lapses, so an event never runs twice at once.
Retries and delays are countdown messages. ``runworker`` (or any started node that
consumes) runs an embedded Celery worker with a thread pool on those queues
(``celery_consumer``).

On PostgreSQL the happy path waits for no WAL flush but the outcome's: the first
message carries the event and goes out before its row, which a writer thread
inserts in batches (``celery_rows``); the consumer claims or creates the row in one
lazily committed statement; the outcome is a flushed commit (shared by handlers
finishing together), which also flushes the claim. docs/events.md lists what is
durable where.

Options: ``APP`` (dotted path to the project's Celery instance) or ``BROKER_URL``
(a Celery app is built for the queue), ``DATABASE`` (the store's alias, default
``default``), ``QUEUE_PREFIX``, ``QUEUE_ARGUMENTS`` (broker queue arguments, e.g.
``{"x-expires": 86400000}`` on RabbitMQ), ``TRANSPORT_OPTIONS``, ``RESEND_AFTER``
(seconds, default one hour, ``None`` turns it off: a pending event due that long ago,
or a running one whose lease lapsed that long ago, while its channel's broker queue
is empty, lost its message — a broker restarted without persistence — and a consuming
node sends it again), ``BOOKKEEPING``.

``BOOKKEEPING = "failures"`` (default ``"all"``) writes no row for an event that
succeeds at its first attempt within ``LEASE / 3``: its message carries it
(marked *lean*), the consumer runs it without a claim and counts the success in
memory, added to the channel's tally every second. A row is written when the event
needs one: a failed attempt (retry or dead letter), a delay or dedupe key (at
publish), a handler still running at the next lease renewal, a message the broker
redelivered (the lost attempt counts). ``stats()`` adds the broker queue's depth to
``pending``. docs/events.md says what this gives up.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from django.db import connections, transaction
from django.utils import timezone
from django.utils.module_loading import import_string

from ...exceptions import BackendUnavailable, ConfigurationError, EventNotFound
from ..context import ConsumerConfig
from .base import (
    STAT_KEYS,
    ClaimedEvent,
    DeadLetter,
    EventConsumer,
    EventInfo,
    NewEvent,
)
from .celery_rows import RowWriter
from .database import DatabaseEventBackend

logger = logging.getLogger("mega_cluster.events.celery")

TASK_NAME = "mega_cluster.events.deliver"
#: What the backend relies on, set on the Celery app it builds from ``BROKER_URL``
#: (docs/deployment.md: set them on yours when you pass ``APP``): acks after the
#: handler, a killed worker's message redelivered, no more reserved than run.
CELERY_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "task_ignore_result": True,
    "worker_prefetch_multiplier": 1,
    "worker_hijack_root_logger": False,
    "broker_connection_retry_on_startup": True,
}
#: How early a message may take an event that is not due yet (seconds): clocks and
#: countdowns of different machines differ a little.
EARLY = 0.05
#: Default ``OPTIONS["RESEND_AFTER"]`` (seconds).
RESEND_AFTER = 3600.0
#: Lost events sent again per channel and round.
RESEND_BATCH = 500
#: ``OPTIONS["BOOKKEEPING"]``: a row per event, or rows only where needed.
BOOKKEEPING = ("all", "failures")
#: Fourth item of a first message's event: run it without a row (``"failures"``).
LEAN = 1
#: How often a consumer adds the successes it counted to the tallies (seconds).
TALLY_EVERY = 1.0

#: A one-row FROM item that turns off the commit's WAL flush for the statement's own
#: (autocommit) transaction: ``set_config(..., is_local => true)`` lasts until that
#: transaction ends. Only for writes that a message restores or a later durable
#: commit flushes (WAL is written in order).
LAZY_COMMIT = "(SELECT set_config('synchronous_commit', 'off', true)) AS mc_lazy"
_ROW_COLUMNS = (
    "id, app_name, channel, payload, status, attempts, failures, max_retries, "
    "timeout, available_at, lease_expires_at, claimed_by, last_error, created_at"
)


class CeleryEventBackend(DatabaseEventBackend):
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("celery", "celery"),)
    leases: ClassVar[bool] = False

    def __init__(self, app: Any, options: Mapping[str, Any]) -> None:
        super().__init__(app, options)
        self.notifies = False  # type: ignore[misc]
        self.send_notify = False
        self.queue_prefix: str = self.options.get("QUEUE_PREFIX") or f"mc.{app.name}."
        self.resend_after: float | None = self.options.get("RESEND_AFTER", RESEND_AFTER)
        self._celery: Any = None
        self._broker_queues: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.rows = RowWriter(self.alias, self._write_rows)
        self._done: list[list[Any]] = []
        self._done_lock = threading.Lock()
        self._completing = threading.Lock()
        #: Set by this process's consumer: its stop event (see :meth:`resend`).
        self.consumer_stopping: threading.Event | None = None
        self.bookkeeping: str = self.options.get("BOOKKEEPING", "all")
        #: Lean events that succeeded here, per channel, not yet in the tallies.
        self._succeeded: dict[str, int] = {}
        self._count_lock = threading.Lock()
        #: Held across a tally flush and across the reads of ``stats()``, so a
        #: count is seen either in memory or in the table, never both or neither.
        self._tally_lock = threading.Lock()
        #: Channels whose tally row exists (a lean channel is known to ``stats()``).
        self._catalogued: set[str] = set()
        #: Set by this process's consumer: ``{channel: lean events running here
        #: without a row}``.
        self.running_rowless: Any = None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = super().check_options(options)
        if not options.get("APP") and not options.get("BROKER_URL"):
            problems.append(
                "CeleryEventBackend needs OPTIONS['APP'] (dotted path to your Celery "
                "app) or OPTIONS['BROKER_URL']."
            )
        resend = options.get("RESEND_AFTER", RESEND_AFTER)
        if resend is not None and (
            isinstance(resend, bool)
            or not isinstance(resend, int | float)
            or resend <= 0
        ):
            problems.append(
                f"OPTIONS['RESEND_AFTER'] is {resend!r}: give seconds (a number > 0), "
                "or None to never send lost events again."
            )
        bookkeeping = options.get("BOOKKEEPING", "all")
        if bookkeeping not in BOOKKEEPING:
            problems.append(
                f"OPTIONS['BOOKKEEPING'] is {bookkeeping!r}: give 'all' (a row per "
                "event, the default) or 'failures' (rows only for events that fail, "
                "wait or run long; docs/events.md)."
            )
        return problems

    # the Celery app ---------------------------------------------------------------

    @property
    def celery(self) -> Any:
        with self._lock:
            if self._celery is None:
                self._celery = self._build_celery()
            return self._celery

    def _build_celery(self) -> Any:
        from . import celery_task  # registers the task on every Celery app

        if self.options.get("APP"):
            try:
                celery_app = import_string(self.options["APP"])
            except ImportError as exc:
                raise ConfigurationError(
                    f"MEGA_CLUSTER EVENT_QUEUE OPTIONS['APP'] {self.options['APP']!r} "
                    f"cannot be imported: {exc}."
                ) from exc
        else:
            from celery import Celery

            celery_app = Celery(
                f"mega_cluster-{self.app.name}",
                broker=self.options["BROKER_URL"],
                set_as_current=False,
            )
            celery_app.conf.update(
                **CELERY_SETTINGS,
                broker_transport_options=dict(
                    self.options.get("TRANSPORT_OPTIONS") or {}
                ),
            )
        celery_task.register(celery_app)
        return celery_app

    def queue_name(self, channel: str) -> str:
        return f"{self.queue_prefix}{channel}"

    def broker_queue(self, channel: str) -> Any:
        # One Queue object per channel: kombu remembers what it declared by object,
        # so a fresh one per message would be declared again on every send.
        try:
            return self._broker_queues[channel]
        except KeyError:
            pass
        from kombu import Exchange, Queue

        name = self.queue_name(channel)
        queue = self._broker_queues[channel] = Queue(
            name,
            Exchange(name, type="direct"),
            routing_key=name,
            queue_arguments=dict(self.options.get("QUEUE_ARGUMENTS") or {}) or None,
        )
        return queue

    def send(
        self,
        channel: str,
        event_id: str,
        countdown: float | None = None,
        event: NewEvent | None = None,
        *,
        lean: bool = False,
        carried: list[Any] | None = None,
    ) -> None:
        """Send the message of ``event_id``; a first message carries the event
        (``event``, or ``carried`` as a first message had it)."""
        celery_app = self.celery  # configuration errors propagate as they are
        args: list[Any] = [self.app.name, event_id, channel]
        if carried is not None:
            args.append(carried)
        elif event is not None:
            # The first message carries the event, so a row whose lazy commit a
            # database crash lost is restored when the message arrives (and a lean
            # event needs none).
            first: list[Any] = [event.payload, event.max_retries, event.timeout]
            if lean:
                first.append(LEAN)
            args.append(first)
        try:
            celery_app.send_task(
                TASK_NAME,
                args=args,
                queue=self.broker_queue(channel),
                countdown=countdown if countdown and countdown > 0 else None,
                ignore_result=True,
                # What monitors show for the arguments. Celery's default, a bounded
                # repr of all of them (the payload too), costs a publish more CPU
                # than building the rest of its message.
                argsrepr=f"[{self.app.name!r}, {event_id!r}, {channel!r}"
                + (", <event>]" if len(args) > 3 else "]"),
            )
        except Exception as exc:
            raise BackendUnavailable(
                f"Celery broker of the event queue is unreachable: {exc}"
            ) from exc

    def resend(
        self,
        channel: str,
        event_id: str,
        countdown: float | None = None,
        carried: list[Any] | None = None,
    ) -> None:
        """A consumer's message for an event it holds (a retry, a release, a look
        later), sent again while the broker refuses it.

        Its row already says what comes next, so a send given up would strand the
        event: pending with no message to run it. The consumer keeps the event's
        slot and its unacknowledged message meanwhile. Once the consumer stops, the
        message it holds goes back to the broker (``Reject(requeue=True)``) and runs
        the event when it comes back. ``countdown`` is measured from the first try;
        ``carried``: the event a lean message carries (it has no row to run from).
        """
        due = time.monotonic() + (countdown or 0)
        stop = self.consumer_stopping
        if stop is None:  # not a consumer: the caller hears of it
            self.send(channel, event_id, countdown, carried=carried)
            return
        from ..attempts import keep_trying

        try:
            keep_trying(
                stop,
                "the Celery broker refuses its message",
                event_id,
                channel,
                lambda: self.send(
                    channel, event_id, due - time.monotonic(), carried=carried
                ),
                errors=(BackendUnavailable,),
            )
        except BackendUnavailable as exc:
            from celery.exceptions import Reject

            raise Reject(
                f"event {event_id}: broker unreachable at shutdown", requeue=True
            ) from exc

    def lost(self, channel: str, older_than: float) -> list[str]:
        """Events of ``channel`` a message should have run long ago: pending and due
        for ``older_than`` seconds, or running with a lease that lapsed that long
        ago (the broker redelivers a dead worker's message well before)."""
        matching = [self.app.name, channel, time.time() - older_than, RESEND_BATCH]
        rows = self._execute(
            f"SELECT id FROM ({self.takeable_sql()}) AS overdue", matching * 2
        )
        return [row[0] for row in rows]

    def queued(self, channel: str) -> int | None:
        """Messages waiting in the channel's broker queue (0 when the broker has no
        such queue), or None when the broker cannot tell."""
        return self.queue_depths([channel]).get(channel)

    def queue_depths(self, channels: list[str]) -> dict[str, int]:
        """Messages waiting in each channel's broker queue (0 when the broker has no
        such queue), over one pooled connection; a channel the broker cannot count
        is left out (and logged)."""
        depths: dict[str, int] = {}
        if not channels:
            return depths
        try:
            with self.celery.pool.acquire(block=True, timeout=5) as conn:
                broker_channel = None
                try:
                    for channel in channels:
                        if broker_channel is None:
                            broker_channel = conn.channel()
                        try:
                            depths[channel] = broker_channel.queue_declare(
                                queue=self.queue_name(channel), passive=True
                            ).message_count
                        except Exception as exc:
                            if not _not_found(exc):
                                raise
                            depths[channel] = 0
                            # AMQP closes a channel on a failed passive declare.
                            with contextlib.suppress(Exception):
                                broker_channel.close()
                            broker_channel = None
                finally:
                    if broker_channel is not None:
                        with contextlib.suppress(Exception):
                            broker_channel.close()
        except Exception as exc:
            logger.warning(
                "event queue: cannot count the broker queues of channel(s) %s: %s",
                ", ".join(c for c in channels if c not in depths),
                exc,
            )
        return depths

    def resend_lost(self, channel: str) -> int:
        """Send the channel's lost events (see :meth:`lost`) again, if its broker
        queue is empty; how many were sent. A message for an event that did run
        after all is dropped by the claim, so sending one too many is harmless."""
        if self.resend_after is None:
            return 0
        lost = self.lost(channel, self.resend_after)
        if not lost or self.queued(channel) != 0:
            return 0
        for event_id in lost:
            self.send(channel, event_id)
        logger.warning(
            "event queue: %d event(s) of channel %s waited over %gs with no message "
            "in the broker (lost in a broker restart?); sent again",
            len(lost),
            channel,
            self.resend_after,
            extra={"channel": channel},
        )
        return len(lost)

    # store + broker ---------------------------------------------------------------

    def enqueue(self, event: NewEvent) -> str:
        self.celery  # noqa: B018 - a configuration error must come before the insert
        if (
            self.bookkeeping == "failures"
            and event.dedupe_key is None
            and event.available_at <= time.time()
        ):
            # No row: the message is the event until it needs one.
            self._catalog(event.channel)
            self.send(event.channel, event.id, None, event, lean=True)
            return event.id
        if self.lazy_insert(event):
            # The message carries the event and goes first; its row follows in the
            # row writer's next batch (or is written by the consumer, whichever is
            # first). A failed send leaves nothing behind.
            self.send(event.channel, event.id, event.available_at - time.time(), event)
            self.rows.add(
                [
                    event.id,
                    event.channel,
                    event.payload,
                    event.max_retries,
                    event.timeout,
                    event.available_at,
                    time.time(),
                ]
            )
            return event.id
        event_id = super().enqueue(event)
        if event_id != event.id:  # deduplicated: the existing event has its message
            return event_id
        try:
            self.send(event.channel, event.id, event.available_at - time.time())
        except BackendUnavailable:
            # Nothing was sent, so nothing may stay queued.
            self._objects().filter(id=event.id).delete()
            raise
        return event_id

    def _write_rows(self, rows: list[list[Any]]) -> None:
        # One statement, one parameter: the rows travel as one JSON array (adapting
        # eight parameters per row cost the writer more than the insert itself),
        # committed lazily by the FROM item (no BEGIN/SET/COMMIT round trips).
        self._execute(
            f"INSERT INTO {self.table} ({_ROW_COLUMNS}) SELECT r->>0, %s, r->>1, "
            "r->>2, 'pending', 0, 0, (r->>3)::int, (r->>4)::float8, "
            "(r->>5)::float8, NULL, '', '', to_timestamp((r->>6)::float8) "
            f"FROM json_array_elements(%s::json) AS r, {LAZY_COMMIT} "
            "ON CONFLICT (id) DO NOTHING",
            [self.app.name, json.dumps(rows)],
        )

    def _catalog(self, channel: str) -> None:
        """Make a lean channel known to ``stats()`` (its tally row), once per
        process; a failure is logged and tried again at the next publish."""
        if channel in self._catalogued:
            return
        try:
            self.add_tally(channel, 0, 0)
        except Exception as exc:
            logger.warning(
                "event queue: cannot record channel %s in the tallies: %s",
                channel,
                exc,
            )
            return
        self._catalogued.add(channel)

    def lazy_insert(self, event: NewEvent) -> bool:
        # A dedupe key's row stays a durable commit: the key's uniqueness must
        # survive a database crash, and the message cannot restore it.
        return event.dedupe_key is None and self._lazy()

    def _lazy(self) -> bool:
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
        now = time.time()
        lazy = self._lazy()
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
                "SELECT %s, %s, %s, %s, 'running', %s, 0, %s, %s, %s, %s, %s, '', %s "
                f"FROM {LAZY_COMMIT} ON CONFLICT (id) DO UPDATE SET "
                "status = 'running', attempts = e.attempts + 1, dedupe_key = NULL, "
                "lease_expires_at = EXCLUDED.lease_expires_at, "
                "claimed_by = EXCLUDED.claimed_by WHERE e.app_name = %s AND "
                "((e.status = 'pending' AND e.available_at <= %s) OR "
                "(e.status = 'running' AND e.lease_expires_at < %s)) "
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
                    now + lease,
                    self.app.node_id,
                    connections[self.alias].ops.adapt_datetimefield_value(
                        timezone.now()
                    ),
                    self.app.name,
                    now + EARLY,
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
                "attempts = attempts + 1, dedupe_key = NULL, lease_expires_at = %s, "
                f"claimed_by = %s{from_lazy} WHERE id = %s AND app_name = %s AND "
                f"(({self.table}.status = 'pending' AND available_at <= %s) OR "
                f"({self.table}.status = 'running' AND lease_expires_at < %s)) "
                "RETURNING id, channel, payload, attempts, max_retries, timeout, "
                "(SELECT status = 'running' FROM old)",
                [
                    event_id,
                    now + lease,
                    self.app.node_id,
                    event_id,
                    self.app.name,
                    now + EARLY,
                    now,
                ],
            )
        if not rows:
            row = (
                self._objects()
                .filter(id=event_id)
                .values_list("status", "lease_expires_at", "available_at")
                .first()
            )
            if row is None:
                return None
            status, lease_expires_at, available_at = row
            if status == "pending" and available_at > now + EARLY:
                # Not due yet (a message that came early: handed back at a
                # shutdown, or a duplicate): look again when it is.
                return available_at - time.time()
            if status != "running" or lease_expires_at is None:
                return None
            return max(0.0, lease_expires_at - time.time())
        row = rows[0]
        return ClaimedEvent(
            id=row[0],
            channel=row[1],
            payload=row[2],
            attempt=row[3],
            max_retries=row[4],
            timeout=row[5],
            lost=bool(row[6]) if was is None else was[0] == "running",
        )

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
        now = time.time()
        running = status == "running"
        connection = connections[self.alias]
        lazy = f" FROM {LAZY_COMMIT}" if running and self._lazy() else ""
        # WHERE true: SQLite would read ON CONFLICT after a bare SELECT as a join.
        return bool(
            self._execute(
                f"INSERT INTO {self.table} ({_ROW_COLUMNS}, finished_at) SELECT %s, "
                f"%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s{lazy} "
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
                    now if available_at is None else available_at,
                    now + lease if running and lease is not None else None,
                    self.app.node_id if running else "",
                    error[:10_000],
                    connection.ops.adapt_datetimefield_value(timezone.now()),
                    now if status == "dead" else None,
                ],
            )
        )

    def lean_retry(
        self, event: ClaimedEvent, error: str, *, available_at: float
    ) -> None:
        """A lean event's failed attempt with retries left: its row, pending until
        ``available_at``, and a countdown message (as :meth:`retry`)."""
        self.lean_row(event, "pending", error=error, available_at=available_at)
        self.resend(event.channel, event.id, available_at - time.time())

    def lean_bury(self, event: ClaimedEvent, error: str) -> None:
        """A lean event's failed last attempt: its row, a dead letter."""
        self.lean_row(event, "dead", error=error)

    def count_succeeded(self, channel: str) -> None:
        """A lean event succeeded here: counted in memory until the next
        :meth:`flush_tallies`."""
        with self._count_lock:
            self._succeeded[channel] = self._succeeded.get(channel, 0) + 1

    def flush_tallies(self) -> None:
        """Add the successes counted here to the channels' tallies (one
        transaction; kept in memory for the next try if it fails)."""
        with self._tally_lock:
            with self._count_lock:
                counts, self._succeeded = self._succeeded, {}
            if not counts:
                return
            try:
                with transaction.atomic(using=self.alias):
                    for channel, succeeded in sorted(counts.items()):
                        self.add_tally(channel, succeeded, 0)
            except BaseException:
                with self._count_lock:
                    for channel, succeeded in counts.items():
                        self._succeeded[channel] = (
                            self._succeeded.get(channel, 0) + succeeded
                        )
                raise
            self._catalogued.update(counts)

    def renew(self, events: list[ClaimedEvent], *, lease: float) -> None:
        lazy = f" FROM {LAZY_COMMIT}" if self._lazy() else ""
        for event in events:
            self._execute(
                f"UPDATE {self.table} SET lease_expires_at = %s{lazy} "
                f"WHERE id = %s AND {self.table}.status = 'running' "
                f"AND {self.table}.attempts = %s",
                [time.time() + lease, event.id, event.attempt],
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
                        "finished_at = %s, lease_expires_at = NULL FROM (VALUES "
                        f"{values}) AS v (id, attempts) WHERE e.id = v.id AND "
                        "e.status = 'running' AND e.attempts = v.attempts",
                        [time.time(), *(x for item in batch for x in item[:2])],
                    )
                    outcome: Any = True
                except Exception as exc:
                    outcome = exc
                for item in batch:
                    item[2] = outcome
        outcome = entry[2]
        if isinstance(outcome, BaseException):
            raise outcome

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        super().retry(event, error, available_at=available_at)
        self.resend(event.channel, event.id, available_at - time.time())

    def release(self, event: ClaimedEvent) -> None:
        super().release(event)
        self.resend(event.channel, event.id, 1.0)

    def retry_dead(self, event_id: str) -> None:
        channel = (
            self._objects()
            .filter(id=event_id, status="dead")
            .values_list("channel", flat=True)
            .first()
        )
        if channel is None:
            raise EventNotFound(f"No dead letter with id {event_id!r}.")
        super().retry_dead(event_id)
        try:
            self.send(channel, event_id)
        except BackendUnavailable:
            # No message, so it stays a dead letter (to be retried again later)
            # rather than pending with nothing to run it.
            self._objects().filter(id=event_id, status="pending", attempts=0).update(
                status="dead", finished_at=time.time()
            )
            raise

    # Readers in this process see its own publishes at once.

    def stats(self, channel: str | None = None) -> dict[str, dict[str, int]]:
        """The store's counts, plus what only this process knows (lean events
        running here without a row, successes not yet in the tallies) and, with
        ``BOOKKEEPING = "failures"``, the messages waiting in the broker queues
        (lean events, which have no row until they need one)."""
        self.rows.flush()
        with self._tally_lock:
            result = super().stats(channel)
            with self._count_lock:
                local = dict(self._succeeded)
        running = self.running_rowless() if self.running_rowless is not None else {}
        for key, extra in (("succeeded", local), ("running", running)):
            for name, n in extra.items():
                if n and channel in (None, name):
                    result.setdefault(name, dict.fromkeys(STAT_KEYS, 0))[key] += n
        if self.bookkeeping == "failures":
            names = sorted(set(result) | ({channel} if channel is not None else set()))
            for name, n in self.queue_depths(names).items():
                if n:
                    result.setdefault(name, dict.fromkeys(STAT_KEYS, 0))["pending"] += n
        return result

    def events(
        self, channel: str | None, status: str | None, limit: int
    ) -> list[EventInfo]:
        self.rows.flush()
        return super().events(channel, status, limit)

    def oldest_pending(self, channel: str) -> float | None:
        self.rows.flush()
        return super().oldest_pending(channel)

    def dead_letters(self, channel: str | None, limit: int) -> list[DeadLetter]:
        self.rows.flush()
        return super().dead_letters(channel, limit)

    def stop(self) -> None:
        super().stop()
        self.rows.stop()
        # After the consumer stopped (EventQueue.stop): its last successes.
        try:
            self.flush_tallies()
        except Exception:
            logger.exception("event queue: the last successes were not tallied")

    def claim(self, channel: str, limit: int, *, lease: float) -> list[ClaimedEvent]:
        raise NotImplementedError("the Celery backend is consumed by a Celery worker")

    def make_consumer(self, config: ConsumerConfig) -> EventConsumer | None:
        from .celery_consumer import CeleryConsumer

        return CeleryConsumer(self, config)


def _not_found(exc: BaseException) -> bool:
    """The broker has no such queue (AMQP 404, or kombu's virtual transports)."""
    return "NOT_FOUND" in str(exc) or getattr(exc, "code", None) == 404
