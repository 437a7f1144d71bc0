"""Event queue on Celery: the broker delivers, the database keeps the books.

:class:`CeleryEventBackend` composes a store (:mod:`.store`, the ``database``
backend's table), a broker (:mod:`.broker`) and, with ``BOOKKEEPING =
"failures"``, a lean book (:mod:`.lean`); its consumer is :mod:`.consumer`, the
task and the embedded worker :mod:`.task`, the message :mod:`.protocol`.

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
(:mod:`.consumer`).

On PostgreSQL the happy path waits for no WAL flush but the outcome's: the first
message carries the event and goes out before its row, which a writer thread
inserts in batches (:mod:`.rows`); the consumer claims or creates the row in one
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

import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ....backends import PING_TIMEOUT
from ....circuit import Circuit
from ....exceptions import BackendUnavailable, EventNotFound
from ...context import ConsumerConfig
from ..base import (
    STAT_KEYS,
    ClaimedEvent,
    DeadLetter,
    EventBackend,
    EventConsumer,
    EventInfo,
    NewEvent,
)
from .broker import Broker
from .consumer import CeleryConsumer
from .lean import LeanBook
from .protocol import BOOKKEEPING, RESEND_AFTER, first_message
from .store import CeleryStore

logger = logging.getLogger("mega_cluster.events.celery")


class CeleryEventBackend(EventBackend):
    """The event queue on a Celery broker: a :class:`~.store.CeleryStore`
    (``store``), a :class:`~.broker.Broker` (``broker``) and a
    :class:`~.lean.LeanBook` (``book``)."""

    requires: ClassVar[tuple[tuple[str, str], ...]] = (("celery", "celery"),)
    #: What it is built of (each reads its own ``OPTIONS``).
    parts: ClassVar[tuple[type, ...]] = (CeleryStore, Broker, LeanBook)
    leases: ClassVar[bool] = False
    supports_listing: ClassVar[bool] = True
    outbox: ClassVar[bool] = True

    def __init__(self, app: Any, options: Mapping[str, Any]) -> None:
        super().__init__(app, options)
        self.store = CeleryStore(app, options)
        self.broker = Broker(app.name, self.options)
        self.book = LeanBook(self.store)
        self.resend_after: float | None = self.options.get("RESEND_AFTER", RESEND_AFTER)
        self.bookkeeping: str = self.options.get("BOOKKEEPING", "all")

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = CeleryStore.check_options(options) + Broker.check_options(options)
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

    def transaction_alias(self) -> str:
        return self.store.alias

    def make_consumer(self, config: ConsumerConfig) -> EventConsumer | None:
        return CeleryConsumer(self, config)

    # publishing -------------------------------------------------------------------

    def enqueue(self, event: NewEvent) -> str:
        self.broker.celery  # noqa: B018 - a configuration error comes before a row
        delay = event.available_at - time.time()
        if self.bookkeeping == "failures" and event.dedupe_key is None and delay <= 0:
            # No row: the message is the event until it needs one.
            self.book.catalog(event.channel)
            self.broker.send(event.channel, event.id, None, _carried(event, lean=True))
            return event.id
        if self.store.lazy_insert(event):
            # The message carries the event and goes first; its row follows in the
            # row writer's next batch (or is written by the consumer, whichever is
            # first). A failed send leaves nothing behind.
            self.broker.send(event.channel, event.id, delay, _carried(event))
            self.store.rows.add(
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
        event_id = self.store.enqueue(event)
        if event_id != event.id:  # deduplicated: the existing event has its message
            return event_id
        try:
            self.broker.send(event.channel, event.id, delay)
        except BackendUnavailable:
            # Nothing was sent, so nothing may stay queued.
            self.store.forget(event.id)
            raise
        return event_id

    # lost messages ----------------------------------------------------------------

    def resend_lost(self, channel: str) -> int:
        """Send the channel's lost events (see :meth:`~.store.CeleryStore.lost`)
        again, if its broker queue is empty; how many were sent. A message for an
        event that did run after all is dropped by the claim, so sending one too
        many is harmless."""
        if self.resend_after is None:
            return 0
        lost = self.store.lost(channel, self.resend_after)
        if not lost or self.broker.queued(channel) != 0:
            return 0
        for event_id in lost:
            self.broker.send(channel, event_id)
        logger.warning(
            "event queue: %d event(s) of channel %s waited over %gs with no message "
            "in the broker (lost in a broker restart?); sent again",
            len(lost),
            channel,
            self.resend_after,
            extra={"channel": channel},
        )
        return len(lost)

    # operations (readers in this process see its own publishes at once) -----------

    def stats(self, channel: str | None = None) -> dict[str, dict[str, int]]:
        """The store's counts, plus what only this process knows (lean events
        running here without a row, successes not yet in the tallies) and, with
        ``BOOKKEEPING = "failures"``, the messages waiting in the broker queues
        (lean events, which have no row until they need one)."""
        self.store.rows.flush()
        with self.book.reading() as local:  # no lean row written meanwhile
            result = self.store.stats(channel)
            running = self.book.rowless()
        for key, extra in (("succeeded", local), ("running", running)):
            for name, n in extra.items():
                if n and channel in (None, name):
                    result.setdefault(name, dict.fromkeys(STAT_KEYS, 0))[key] += n
        if self.bookkeeping == "failures":
            names = sorted(set(result) | ({channel} if channel is not None else set()))
            for name, n in self.broker.queue_depths(names).items():
                if n:
                    result.setdefault(name, dict.fromkeys(STAT_KEYS, 0))["pending"] += n
        return result

    def events(
        self, channel: str | None, status: str | None, limit: int
    ) -> list[EventInfo]:
        self.store.rows.flush()
        return self.store.events(channel, status, limit)

    def oldest_pending(self, channel: str) -> float | None:
        self.store.rows.flush()
        return self.store.oldest_pending(channel)

    def dead_letters(self, channel: str | None, limit: int) -> list[DeadLetter]:
        self.store.rows.flush()
        return self.store.dead_letters(channel, limit)

    def retry_dead(self, event_id: str) -> None:
        channel = self.store.dead_channel(event_id)
        if channel is None:
            raise EventNotFound(f"No dead letter with id {event_id!r}.")
        self.store.retry_dead(event_id)
        try:
            self.broker.send(channel, event_id)
        except BackendUnavailable:
            self.store.rebury(event_id)
            raise

    def discard_dead(self, event_id: str) -> None:
        self.store.discard_dead(event_id)

    def hold(self, event_id: str, attempt: int, *, lease: float) -> bool:
        # A lean first attempt has no row (and no lease) until it needs one: it
        # holds its event while it runs here and nobody else made a row for it.
        # Asked first: the lease renewal may give it a row meanwhile, which the
        # store then finds (asked the other way round, neither would).
        if attempt == 1 and self.book.holds(event_id):
            if not self.store.has_row(event_id):
                return True
        return self.store.hold(event_id, attempt, lease=lease)

    def prune(self, retention: float) -> int:
        return self.store.prune(retention)

    # health -----------------------------------------------------------------------

    def databases(self) -> list[str]:
        return [self.store.alias]

    def circuits(self) -> list[Circuit]:
        return [self.circuit, self.store.circuit]

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """The store (``SELECT 1``, recorded by the store's circuit: an answer
        closes it), then the broker (one connection attempt)."""
        self.store.circuit.check(timeout)
        self.broker.ping(timeout)

    # lifecycle --------------------------------------------------------------------

    def stop(self) -> None:
        self.store.rows.stop()
        self.store.circuit.reset()  # the store's own circuit: its probe ends here
        # After the consumer stopped (EventQueue.stop): its last successes.
        try:
            self.book.flush()
        except Exception:
            logger.exception("event queue: the last successes were not tallied")

    def claim(self, channel: str, limit: int, *, lease: float) -> list[ClaimedEvent]:
        raise NotImplementedError("the Celery backend is consumed by a Celery worker")


def _carried(event: NewEvent, *, lean: bool = False) -> list[Any]:
    # The first message carries the event, so a row whose lazy commit a database
    # crash lost is restored when the message arrives (and a lean event needs none).
    return first_message(event.payload, event.max_retries, event.timeout, lean=lean)
