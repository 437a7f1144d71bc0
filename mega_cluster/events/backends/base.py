"""The contract of an event-queue backend.

:class:`~mega_cluster.events.EventQueue` does everything backends share — payload
encoding, channel validation, deferral to ``transaction.on_commit``, the consumer
loop with its slots, timeouts, retries with backoff and dead-lettering. A backend
only stores events and hands them out. A backend is bound to one cluster app and
adds the app namespace itself; every ``channel`` argument is the name as published.

Pull backends (``memory``, ``database``) implement :meth:`EventBackend.claim`; the
consumer claims as many events as it has free slots. Times are Unix timestamps
(``time.time()``) and durations are seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from ...backends import Backend
from ..context import ConsumerConfig, Subscription


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An event being published (payload already JSON-encoded and size-checked)."""

    id: str
    channel: str
    payload: str
    max_retries: int
    timeout: float | None
    available_at: float
    dedupe_key: str | None


@dataclass(frozen=True, kw_only=True)
class ClaimedEvent:
    """An event handed to this node for one attempt (``attempt`` is 1-based)."""

    id: str
    channel: str
    payload: str
    attempt: int
    max_retries: int
    timeout: float | None
    #: The previous attempt was lost: its worker died (or was killed) before it
    #: recorded an outcome, and the lease lapsed or the broker redelivered.
    lost: bool = False


def claimed_event(row: Any, lost: bool | None = None) -> ClaimedEvent:
    """A claim's row (the database backend's claim columns and whether the previous attempt was lost) as a
    :class:`ClaimedEvent`; ``lost`` given overrides the row's."""
    return ClaimedEvent(
        id=row[0],
        channel=row[1],
        payload=row[2],
        attempt=row[3],
        max_retries=row[4],
        timeout=row[5],
        lost=bool(row[6]) if lost is None else lost,
    )


@dataclass(frozen=True, kw_only=True)
class DeadLetter:
    """An event that failed every attempt, as listed by ``dead_letters()``."""

    id: str
    channel: str
    payload: Any
    attempts: int
    error: str
    failed_at: datetime | None


@dataclass(frozen=True, kw_only=True)
class EventInfo:
    """An event as ``events()`` lists it: its state, attempts so far and last error
    (with its traceback when the handler raised); times are Unix timestamps."""

    id: str
    channel: str
    status: str
    payload: Any
    attempts: int
    error: str
    available_at: float | None
    finished_at: float | None


#: The states ``events()`` can filter on.
EVENT_STATES = ("pending", "running", "succeeded", "dead")

#: The counters ``stats()`` returns per channel.
STAT_KEYS = ("pending", "running", "succeeded", "failed", "dead")


class EventConsumer(Protocol):
    """What the queue drives: the generic pull consumer (``events/consumer.py``),
    or a backend's own (:meth:`EventBackend.make_consumer`). Every method is
    called from any thread."""

    def start(self) -> None:
        """Begin consuming (the queue then adds its subscriptions)."""

    def add(self, sub: Subscription) -> None:
        """Consume ``sub.channel`` with ``sub`` (replacing an earlier handler),
        unless the configuration leaves the channel out."""

    def remove(self, channel: str) -> None:
        """Take no new event of ``channel``; running ones finish."""

    def stop(self, drain_timeout: float) -> None:
        """Drain: set every running attempt's ``ctx.cancelled``, take nothing new,
        wait up to ``drain_timeout`` for running events, hand the rest back."""

    def wait_failed(self, timeout: float | None) -> BaseException | None:
        """The consumer's fatal error once it has one (``runworker`` exits on it)."""


class EventBackend(Backend):
    """Stores events of one cluster app and hands them to consumers.

    Capability flags:

    ``blocking``
        True when calls do network or database I/O; the consumer then calls them
        from its I/O threads instead of its event loop.
    ``notifies``
        True when :meth:`add_waker` callbacks fire for events published by any
        process; otherwise the consumer also polls every ``POLL_INTERVAL``.
    ``leases``
        True when a claimed event whose worker dies is handed out again once its
        lease lapses (durable backends); the consumer then renews leases.
    """

    blocking: ClassVar[bool] = True
    notifies: ClassVar[bool] = False
    circuit_name: ClassVar[str] = "event_queue"
    #: The calls of publishers and operators (a consumer's own calls retry and
    #: back off by themselves).
    guarded: ClassVar[tuple[str, ...]] = (
        "enqueue",
        "stats",
        "dead_letters",
        "events",
        "retry_dead",
        "discard_dead",
    )
    leases: ClassVar[bool] = True
    #: True when :meth:`enqueue` inside an ``atomic()`` block of
    #: :meth:`transaction_alias` writes in that transaction (the ``database``
    #: backend): a rollback removes the event.
    writes_in_transaction: ClassVar[bool] = False
    #: True when an event published inside ``atomic()`` goes through the outbox
    #: table (written in the transaction, sent after commit or by the relay).
    outbox: ClassVar[bool] = False

    def __init__(self, app: Any, options: Any) -> None:
        super().__init__(app, options)
        self._wakers: list[Callable[[str | None], None]] = []

    # wake-ups -------------------------------------------------------------------

    def add_waker(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(channel)`` when an event may have become claimable.

        ``channel`` is ``None`` when the backend does not know which channel.
        Callbacks must be cheap and thread-safe; they are called from any thread.
        """
        self._wakers.append(callback)

    def remove_waker(self, callback: Callable[[str | None], None]) -> None:
        if callback in self._wakers:
            self._wakers.remove(callback)

    def wake(self, channel: str | None) -> None:
        for callback in list(self._wakers):
            callback(channel)

    def make_consumer(self, config: ConsumerConfig) -> EventConsumer | None:
        """A consumer of its own for push backends (Celery); ``None``: the generic
        pull consumer, which calls :meth:`claim`."""
        return None

    def transaction_alias(self) -> str:
        """The database alias whose ``atomic()`` block defers a publish to commit."""
        return "default"

    # publishing -----------------------------------------------------------------

    def enqueue(self, event: NewEvent) -> str:
        """Store ``event`` and return its id.

        With ``event.dedupe_key`` set and an event with that key and channel still
        waiting for its first attempt, nothing is stored and that event's id is
        returned.
        """
        raise NotImplementedError

    # consuming ------------------------------------------------------------------

    def claim(self, channel: str, limit: int, *, lease: float) -> list[ClaimedEvent]:
        """Take up to ``limit`` events that are due, oldest first.

        Each taken event's attempt counter is incremented (so an attempt whose
        worker died counts) and it is leased to this node for ``lease`` seconds.
        Events whose lease lapsed are claimable again. Never returns an event to two
        consumers at once.
        """
        raise NotImplementedError

    def next_due(self, channel: str) -> float | None:
        """When the next pending or leased event of ``channel`` may become claimable."""
        raise NotImplementedError

    def renew(self, events: list[ClaimedEvent], *, lease: float) -> None:
        """Extend the lease of events this node is still running."""

    def complete(self, event: ClaimedEvent) -> None:
        """Mark the attempt successful; ignored when this node lost the lease."""
        raise NotImplementedError

    def hold(self, event_id: str, attempt: int, *, lease: float) -> bool:
        """Whether attempt ``attempt`` of the event still holds it: the event is
        running that attempt and its lease has not lapsed. When it holds, the lease
        is extended by ``lease`` seconds, so no other node can take the event before
        the attempt records its outcome.

        Database backends run this on :meth:`transaction_alias`'s connection: inside
        an ``atomic()`` block it is part of the caller's transaction (a write made
        in the block is fenced by the lease). Used by ``mega_cluster.tasks``.
        """
        raise NotImplementedError

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        """Record a failed attempt; the event becomes claimable at ``available_at``."""
        raise NotImplementedError

    def bury(self, event: ClaimedEvent, error: str) -> None:
        """Record a failed last attempt: the event becomes a dead letter."""
        raise NotImplementedError

    def release(self, event: ClaimedEvent) -> None:
        """Give an unfinished event back without counting the attempt (shutdown)."""
        raise NotImplementedError

    def prune(self, retention: float) -> int:
        """Forget succeeded events finished more than ``retention`` seconds ago,
        keeping them counted in :meth:`stats`; how many were forgotten. Backends
        that keep no finished events have nothing to do."""
        return 0

    # operations -------------------------------------------------------------------

    def stats(self, channel: str | None = None) -> dict[str, dict[str, int]]:
        """``{channel: {"pending", "running", "succeeded", "failed", "dead"}}``.

        ``failed`` counts failed attempts (retried or dead-lettered).
        """
        raise NotImplementedError

    def dead_letters(self, channel: str | None, limit: int) -> list[DeadLetter]:
        """Dead letters, newest first (payloads decoded)."""
        raise NotImplementedError

    #: True when :meth:`events` lists events (otherwise only dead letters are seen).
    supports_listing: ClassVar[bool] = False

    def events(
        self, channel: str | None, status: str | None, limit: int
    ) -> list[EventInfo]:
        """The stored events, newest first, optionally of one channel and state.

        Succeeded events are listed only by backends that keep them.
        """
        raise NotImplementedError

    def oldest_pending(self, channel: str) -> float | None:
        """When the longest-waiting due event of ``channel`` became due (Unix time);
        None when no event is due or the backend cannot tell (this default). The
        admin's Queues page and ``cluster_status`` show its age."""
        return None

    def retry_dead(self, event_id: str) -> None:
        """Make a dead letter pending again with a fresh attempt budget.

        Raises ``EventNotFound`` when no dead letter has that id.
        """
        raise NotImplementedError

    def discard_dead(self, event_id: str) -> None:
        """Delete a dead letter; raises ``EventNotFound`` when there is none."""
        raise NotImplementedError
