"""The lean book (``BOOKKEEPING = "failures"``): events that run without a row.

A lean event exists only in its message and in this process's memory until it
needs a row: its handler still running at the next lease renewal (the row stops a
redelivered copy and shows it to other nodes), a failed attempt (retry or dead
letter), or a message the broker redelivered (the lost attempt counts). A success
without a row is counted here and added to the channel's tally every
:data:`~.protocol.TALLY_EVERY` seconds. :class:`Outcomes` records an attempt's
outcome where it belongs: the event's row if it has one, else this book.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.db import transaction

from ...attempts import RetryingStore, Write
from ..base import ClaimedEvent
from .store import CeleryStore

logger = logging.getLogger("mega_cluster.events.celery")


class LeanEntry:
    """A lean event running here: whether it has a row yet (written by the lease
    renewal when it runs long) and whether its outcome is being written. ``lock``
    orders the two, so the outcome goes to the row if and only if there is one."""

    __slots__ = ("done", "event", "lock", "rowed")

    def __init__(self, event: ClaimedEvent) -> None:
        self.event = event
        self.lock = threading.Lock()
        self.rowed = False
        self.done = False

    def finish(self) -> bool:
        """Mark the attempt finished; whether the event has a row."""
        with self.lock:
            self.done = True
            return self.rowed


class LeanBook:
    """This process's lean events: those running without a row, and successes
    not yet in the tallies."""

    def __init__(self, store: CeleryStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._running: dict[str, LeanEntry] = {}
        self._succeeded: dict[str, int] = {}
        #: Held across a tally flush, a lease renewal's row writes and the reads
        #: of ``stats()``, so a success or a running event is seen either in
        #: memory or in the table, never both or neither.
        self._tally_lock = threading.Lock()
        #: Channels whose tally row exists (a lean channel is known to ``stats()``).
        self._catalogued: set[str] = set()

    # running ----------------------------------------------------------------------

    def begin(self, event: ClaimedEvent) -> LeanEntry:
        entry = LeanEntry(event)
        with self._lock:
            self._running[event.id] = entry
        return entry

    def end(self, event_id: str) -> None:
        with self._lock:
            self._running.pop(event_id, None)

    def holds(self, event_id: str) -> bool:
        """Whether lean event ``event_id`` runs here, not finished, without a row."""
        with self._lock:
            entry = self._running.get(event_id)
        if entry is None:
            return False
        with entry.lock:
            return not entry.rowed and not entry.done

    def rowless(self) -> dict[str, int]:
        """``{channel: lean events running here without a row}``."""
        counts: dict[str, int] = {}
        with self._lock:
            for entry in self._running.values():
                if not entry.rowed and not entry.done:
                    channel = entry.event.channel
                    counts[channel] = counts.get(channel, 0) + 1
        return counts

    def give_rows(self, lease: float) -> list[ClaimedEvent]:
        """At a lease renewal: write the row of each lean event still running
        without one (so a message redelivered meanwhile, e.g. by Redis' visibility
        timeout, finds it running under a lease, and other nodes' ``stats()``
        count it); the events that already had one, whose lease to renew."""
        with self._lock:
            entries = list(self._running.values())
        renew = []
        with self._tally_lock:  # not while stats() reads: counted once
            for entry in entries:
                with entry.lock:
                    if entry.done:
                        continue
                    if not entry.rowed:
                        self.store.lean_row(entry.event, "running", lease=lease)
                        entry.rowed = True
                        continue
                renew.append(entry.event)
        return renew

    # successes --------------------------------------------------------------------

    def count_succeeded(self, channel: str) -> None:
        """A lean event succeeded here: counted until the next :meth:`flush`."""
        with self._lock:
            self._succeeded[channel] = self._succeeded.get(channel, 0) + 1

    def flush(self) -> None:
        """Add the successes counted here to the channels' tallies (one
        transaction; kept in memory for the next try if it fails)."""
        with self._tally_lock:
            with self._lock:
                counts, self._succeeded = self._succeeded, {}
            if not counts:
                return
            try:
                with transaction.atomic(using=self.store.alias):
                    for channel, succeeded in sorted(counts.items()):
                        self.store.add_tally(channel, succeeded, 0)
            except BaseException:
                with self._lock:
                    for channel, succeeded in counts.items():
                        self._succeeded[channel] = (
                            self._succeeded.get(channel, 0) + succeeded
                        )
                raise
            self._catalogued.update(counts)

    @contextlib.contextmanager
    def reading(self) -> Iterator[dict[str, int]]:
        """Hold the tallies still while ``stats()`` reads the table; yields the
        successes counted here and not yet in it."""
        with self._tally_lock:
            with self._lock:
                local = dict(self._succeeded)
            yield local

    def catalog(self, channel: str) -> None:
        """Make a lean channel known to ``stats()`` (its tally row), once per
        process; a failure is logged and tried again at the next publish."""
        if channel in self._catalogued:
            return
        try:
            self.store.add_tally(channel, 0, 0)
        except Exception as exc:
            logger.warning(
                "event queue: cannot record channel %s in the tallies: %s",
                channel,
                exc,
            )
            return
        self._catalogued.add(channel)


#: ``send(channel, event_id, countdown, carried)``: a message, sent until it goes.
Send = Callable[..., None]


class Outcomes:
    """An attempt's outcome, as :func:`~..attempts.finish_attempt` records it: to
    the event's row (a retry is followed by its countdown message), or for a lean
    event without one, a success counted in the book or a row written for the
    failure. ``lean``: the lean entry of the attempt, finished here (so a lease
    renewal writes no row after the outcome was decided)."""

    def __init__(
        self,
        store: CeleryStore,
        book: LeanBook,
        write: Write,
        send: Send,
        lean: LeanEntry | None = None,
    ) -> None:
        self._rows = RetryingStore(store, write)
        self._store = store
        self._book = book
        self._write = write
        self._send = send
        self._rowed = True if lean is None else lean.finish()

    def complete(self, event: ClaimedEvent) -> None:
        if self._rowed:
            self._rows.complete(event)
        else:
            self._book.count_succeeded(event.channel)

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        if self._rowed:
            self._rows.retry(event, error, available_at=available_at)
        else:
            self._lean_row(event, "pending", error=error, available_at=available_at)
        self._send(event.channel, event.id, available_at - time.time())

    def bury(self, event: ClaimedEvent, error: str) -> None:
        if self._rowed:
            self._rows.bury(event, error)
        else:
            self._lean_row(event, "dead", error=error)

    def _lean_row(self, event: ClaimedEvent, status: str, **fields: Any) -> None:
        self._write(
            event.id, event.channel, self._store.lean_row, event, status, **fields
        )
