"""Recording an attempt: its budget, its outcome (success, retry with backoff, dead
letter), the writes that wait out a store or broker outage, and the log lines."""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from django.db import Error as DatabaseError

from ... import metrics, node
from ...exceptions import BackendUnavailable
from ..backends.base import ClaimedEvent
from ..context import EventContext, Subscription
from . import incoming

logger = logging.getLogger("mega_cluster.events")

#: Characters of a failed attempt's traceback kept with the event.
MAX_STORED_TRACEBACK = 8000
#: Longest pause between tries of a write while the store or broker is unreachable.
STORE_RETRY_CAP = 5.0
#: Longest pause between two rounds of a consuming node's upkeep: the retention
#: prune, and the Celery backend's look for lost events (seconds).
UPKEEP_EVERY = 60.0


#: What a store write raises while the store is unreachable: ``BackendUnavailable``
#: (an outage, or the store's circuit open), or a Django error of a backend that
#: does not translate its outages.
STORE_DOWN: tuple[type[BaseException], ...] = (BackendUnavailable, DatabaseError)

#: ``write(event_id, channel, method, *args, **kwargs)``: a store write, retried.
Write = Callable[..., Any]


def upkeep_interval(age: float) -> float:
    """How often to look for rows older than ``age`` seconds (the retention prune,
    lost events): twice per ``age``, at most every :data:`UPKEEP_EVERY`."""
    return min(UPKEEP_EVERY, max(0.1, age / 2))


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


# retrying writes --------------------------------------------------------------------


def keep_trying(
    stop: threading.Event,
    trouble: str,
    event_id: str,
    channel: str,
    fn: Callable[..., Any],
    *args: Any,
    errors: tuple[type[BaseException], ...] = STORE_DOWN,
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)``, tried again while it raises one of ``errors``.

    For a write an event cannot do without (its claim, its outcome, its next
    message): the caller keeps the event (its slot, its message) meanwhile. Waits
    double from 0.1 s up to ``STORE_RETRY_CAP``; ``trouble`` says what went wrong in
    the warning logged at the first failure and every twentieth. Raises the last
    error once ``stop`` is set.
    """
    failures = 0
    while True:
        try:
            with node.fork_guard():
                result = fn(*args, **kwargs)
        except errors as exc:
            failures += 1
            if failures == 1 or failures % 20 == 0:
                logger.warning(
                    "event %s on channel %s: %s (%s); tried again (%d tries so far)",
                    event_id,
                    channel,
                    trouble,
                    exc,
                    failures,
                    extra={"event_id": event_id, "channel": channel},
                )
            if stop.wait(min(STORE_RETRY_CAP, 0.05 * 2 ** min(failures, 10))):
                raise
            continue
        if failures:
            logger.warning(
                "event %s on channel %s: done after %d failed tries",
                event_id,
                channel,
                failures,
                extra={"event_id": event_id, "channel": channel},
            )
        return result


def write_to_store(
    stop: threading.Event,
    event_id: str,
    channel: str,
    write: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``write(*args, **kwargs)``, tried again while the event store is unreachable.

    A claim or an outcome that cannot be written is not given up: the event would
    be lost, or left 'running' until its lease lapses and then counted as an
    attempt whose worker died although its handler succeeded.
    """
    return keep_trying(
        stop,
        "the event store is unreachable",
        event_id,
        channel,
        write,
        *args,
        **kwargs,
    )


def store_writer(
    stop: threading.Event,
    at_stop: Callable[[BaseException], BaseException] | None = None,
) -> Write:
    """A consumer's store writes: ``write(event_id, channel, fn, *args, **kwargs)``
    by :func:`write_to_store` until ``stop`` is set; then the store's error, or
    what ``at_stop`` makes of it (e.g. a message handed back to the broker)."""

    def write(
        event_id: str, channel: str, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        try:
            return write_to_store(stop, event_id, channel, fn, *args, **kwargs)
        except STORE_DOWN as exc:  # only once stopping
            if at_stop is None:
                raise
            raise at_stop(exc) from exc

    return write


# outcomes ---------------------------------------------------------------------------


class OutcomeStore(Protocol):
    """Where :func:`finish_attempt` records an attempt's outcome."""

    def complete(self, event: ClaimedEvent) -> None: ...

    def retry(
        self, event: ClaimedEvent, error: str, *, available_at: float
    ) -> None: ...

    def bury(self, event: ClaimedEvent, error: str) -> None: ...


class RetryingStore:
    """``store`` as :func:`finish_attempt` sees it: every outcome write goes
    through ``write`` (e.g. one that waits out an outage, :func:`write_to_store`)."""

    def __init__(self, store: OutcomeStore, write: Write) -> None:
        self._store = store
        self._write = write

    def complete(self, event: ClaimedEvent) -> None:
        self._write(event.id, event.channel, self._store.complete, event)

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        self._write(
            event.id,
            event.channel,
            self._store.retry,
            event,
            error,
            available_at=available_at,
        )

    def bury(self, event: ClaimedEvent, error: str) -> None:
        self._write(event.id, event.channel, self._store.bury, event, error)


#: What a handler returns when it wrote its event's success itself, in the
#: statement that wrote its own result (``mega_cluster.tasks`` on the database
#: queue): the consumer has nothing left to write for a success.
SETTLED: Any = object()


@dataclass(frozen=True)
class Outcome:
    """How an attempt ended: ``error`` is None on success; ``exc_info`` is what the
    handler raised (its traceback is stored with the event); ``settled``: the
    handler recorded the success itself (it returned :data:`SETTLED`)."""

    error: str | None = None
    exc_info: BaseException | None = None
    settled: bool = False


def _nothing() -> None:
    pass


_UNDECODED: Any = object()


@dataclass(eq=False, kw_only=True)
class Attempt:
    """One attempt of a claimed event by a subscription: its context, its timeout
    and retry budget (the event's, completed by the subscription's), and what to
    call at the timeout (the consumer frees the slot)."""

    sub: Subscription
    event: ClaimedEvent
    ctx: EventContext
    timeout: float | None
    max_retries: int
    on_timeout: Callable[[], None] = _nothing
    #: The decoded payload, once :meth:`reject` checked it.
    payload: Any = _UNDECODED

    def decoded(self) -> Any:
        """The payload as the handler gets it."""
        if self.payload is _UNDECODED:
            self.payload = json.loads(self.event.payload)
        return self.payload

    def reject(self, app_name: str, source: str, max_bytes: int) -> str | None:
        """The dead letter's error when the event is not what publish() sends
        (:mod:`.incoming`: counted and logged here), else None (the payload is
        decoded)."""
        event = self.event
        try:
            self.payload = incoming.check(event, max_bytes)
        except incoming.Malformed as exc:
            what = f"event {event.id} on channel {event.channel}"
            incoming.count(app_name, source, what, str(exc))
            return f"{incoming.REJECTED}{exc}"
        return None

    @classmethod
    def of(cls, sub: Subscription, event: ClaimedEvent) -> Attempt:
        return cls(
            sub=sub,
            event=event,
            ctx=EventContext(id=event.id, channel=event.channel, attempt=event.attempt),
            timeout=event.timeout if event.timeout is not None else sub.timeout,
            max_retries=max(event.max_retries, sub.max_retries or 0),
        )

    def spent(self) -> str | None:
        """The dead letter's error when lost attempts spent the whole budget (the
        attempt is not run; logged here), else None."""
        event = self.event
        if event.lost:
            log_lost(event, self.max_retries, idempotent=self.sub.inbox is not None)
        if event.attempt <= self.max_retries + 1:
            return None
        error = f"attempt {event.attempt - 1} was lost (worker died, lease lapsed)"
        if self.sub.inbox is not None:
            # idempotent: run it once more; its inbox skips the handler when the
            # effect committed, else fails with this error (a dead letter)
            self.sub.inbox.last_chance(event.id, error)
            return None
        return error


def report_spent(attempt: Attempt, error: str) -> None:
    """Tell the subscription that the event was dead-lettered without running."""
    on_spent = attempt.sub.on_spent
    if on_spent is None:
        return
    try:
        on_spent(attempt.ctx, error)
    except Exception:
        logger.exception("on_spent of channel %s failed", attempt.event.channel)


def finish_attempt(
    store: OutcomeStore,
    app_name: str,
    attempt: Attempt,
    outcome: Outcome,
    retry_base: float,
    retry_cap: float,
) -> float | None:
    """Record an attempt's outcome and log it; the retry delay if one is due."""
    event, max_retries = attempt.event, attempt.max_retries
    extra = {"event_id": event.id, "channel": event.channel}
    metrics.inc("event_attempts", app=app_name, channel=event.channel)
    error, exc_info = outcome.error, outcome.exc_info
    if error is None:
        if not outcome.settled:
            store.complete(event)
        logger.debug(
            "event %s on channel %s succeeded", event.id, event.channel, extra=extra
        )
        return None
    metrics.inc("event_failures", app=app_name, channel=event.channel)
    stored = error
    if exc_info is not None:
        # Stored with its traceback for the admin's event page (last line = error).
        trace = "".join(traceback.format_exception(exc_info)).rstrip()
        stored = trace[-MAX_STORED_TRACEBACK:]
    if event.attempt <= max_retries:
        delay = backoff(event.attempt, retry_base, retry_cap)
        store.retry(event, stored, available_at=time.time() + delay)
        logger.warning(
            "event %s on channel %s: attempt %d of %d failed (%s); retry in %.2fs",
            event.id,
            event.channel,
            event.attempt,
            max_retries + 1,
            error,
            delay,
            exc_info=exc_info,
            extra=extra,
        )
        return delay
    store.bury(event, stored)
    metrics.inc("event_dead_letters", app=app_name, channel=event.channel)
    logger.warning(
        "event %s on channel %s: attempt %d failed (%s)",
        event.id,
        event.channel,
        event.attempt,
        error,
        exc_info=exc_info,
        extra=extra,
    )
    log_dead(event, error)
    return None


def log_dead(event: ClaimedEvent, error: str) -> None:
    logger.error(
        "event %s on channel %s dead-lettered after %d attempt(s): %s",
        event.id,
        event.channel,
        event.attempt,
        error,
        extra={"event_id": event.id, "channel": event.channel},
    )


def log_start(event: ClaimedEvent) -> None:
    logger.info(
        "event %s on channel %s: attempt %d started",
        event.id,
        event.channel,
        event.attempt,
        extra={"event_id": event.id, "channel": event.channel},
    )


def log_lost(
    event: ClaimedEvent, max_retries: int, *, idempotent: bool = False
) -> None:
    """Logged by the node that takes an event whose previous attempt was lost (its
    worker died or was killed before recording an outcome): that attempt counts."""
    logger.warning(
        "event %s on channel %s: attempt %d was lost (its worker stopped before "
        "recording an outcome) and counts; %s",
        event.id,
        event.channel,
        event.attempt - 1,
        f"running attempt {event.attempt} of {max_retries + 1}"
        if event.attempt <= max_retries + 1
        else "no attempt left: skipped if its idempotent handler's effect committed, "
        "else dead-lettered"
        if idempotent
        else "no attempt left: dead-lettered",
        extra={"event_id": event.id, "channel": event.channel},
    )
