"""In-process event queue for tests and single-process use (not cluster-safe).

Events live in this process's memory; a publish wakes the consumer at once, so
there is no poll loop. Nothing survives a restart.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ClassVar

from ...exceptions import EventNotFound
from .base import (
    STAT_KEYS,
    ClaimedEvent,
    DeadLetter,
    EventBackend,
    EventInfo,
    NewEvent,
)


@dataclass(kw_only=True)
class _Record:
    event: NewEvent
    status: str = "pending"
    attempts: int = 0
    available_at: float = 0.0
    dedupe_key: str | None = None
    error: str = ""
    finished_at: float | None = None


@dataclass(eq=False)
class MemoryEventStore:
    """The events of one memory queue (the nodes of ``mega_cluster.testing``
    share one)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    records: dict[str, _Record] = field(default_factory=dict)
    succeeded: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)


class MemoryEventBackend(EventBackend):
    cluster_safe: ClassVar[bool] = False
    blocking: ClassVar[bool] = False
    notifies: ClassVar[bool] = True
    leases: ClassVar[bool] = False

    def __init__(self, app, options) -> None:
        super().__init__(app, options)
        self.store = MemoryEventStore()

    def now(self) -> float:
        """The time due times are compared with (the testing kit's clock there)."""
        return time.time()

    # the store's parts, under the names the methods below use
    @property
    def _lock(self) -> threading.Lock:
        return self.store.lock

    @property
    def _records(self) -> dict[str, _Record]:
        return self.store.records

    @property
    def _succeeded(self) -> dict[str, int]:
        return self.store.succeeded

    @property
    def _failed(self) -> dict[str, int]:
        return self.store.failed

    def enqueue(self, event: NewEvent) -> str:
        with self._lock:
            if event.dedupe_key is not None:
                for rec in self._records.values():
                    if (
                        rec.dedupe_key == event.dedupe_key
                        and rec.event.channel == event.channel
                    ):
                        return rec.event.id
            self._records[event.id] = _Record(
                event=event,
                available_at=event.available_at,
                dedupe_key=event.dedupe_key,
            )
        self.wake(event.channel)
        return event.id

    def claim(self, channel: str, limit: int, *, lease: float) -> list[ClaimedEvent]:
        now = self.now()
        with self._lock:
            due = [
                rec
                for rec in self._records.values()
                if rec.status == "pending"
                and rec.event.channel == channel
                and rec.available_at <= now
            ]
            due.sort(key=lambda rec: rec.available_at)
            claimed = []
            for rec in due[:limit]:
                rec.status = "running"
                rec.attempts += 1
                rec.dedupe_key = None
                claimed.append(self._claimed(rec))
            return claimed

    @staticmethod
    def _claimed(rec: _Record) -> ClaimedEvent:
        return ClaimedEvent(
            id=rec.event.id,
            channel=rec.event.channel,
            payload=rec.event.payload,
            attempt=rec.attempts,
            max_retries=rec.event.max_retries,
            timeout=rec.event.timeout,
        )

    def next_due(self, channel: str) -> float | None:
        with self._lock:
            times = [
                rec.available_at
                for rec in self._records.values()
                if rec.status == "pending" and rec.event.channel == channel
            ]
        return min(times, default=None)

    def hold(self, event_id: str, attempt: int, *, lease: float) -> bool:
        with self._lock:
            rec = self._records.get(event_id)
            return (
                rec is not None
                and rec.status == "running"
                and (rec.attempts == attempt)
            )

    def _running(self, event: ClaimedEvent) -> _Record | None:
        rec = self._records.get(event.id)
        if rec is None or rec.status != "running" or rec.attempts != event.attempt:
            return None
        return rec

    def complete(self, event: ClaimedEvent) -> None:
        with self._lock:
            if self._running(event) is not None:
                del self._records[event.id]
                self._succeeded[event.channel] = (
                    self._succeeded.get(event.channel, 0) + 1
                )

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        with self._lock:
            rec = self._running(event)
            if rec is not None:
                rec.status = "pending"
                self._count_failure(rec)
                rec.error = error
                rec.available_at = available_at
        self.wake(event.channel)

    def bury(self, event: ClaimedEvent, error: str) -> None:
        with self._lock:
            rec = self._running(event)
            if rec is not None:
                rec.status = "dead"
                self._count_failure(rec)
                rec.error = error
                rec.finished_at = self.now()

    def _count_failure(self, rec: _Record) -> None:
        self._failed[rec.event.channel] = self._failed.get(rec.event.channel, 0) + 1

    def release(self, event: ClaimedEvent) -> None:
        with self._lock:
            rec = self._running(event)
            if rec is not None:
                rec.status = "pending"
                rec.attempts -= 1
        self.wake(event.channel)

    def stats(self, channel: str | None = None) -> dict[str, dict[str, int]]:
        result: dict[str, dict[str, int]] = {}

        def row(name: str) -> dict[str, int]:
            return result.setdefault(name, dict.fromkeys(STAT_KEYS, 0))

        with self._lock:
            for rec in self._records.values():
                if channel is None or rec.event.channel == channel:
                    counts = row(rec.event.channel)
                    counts[rec.status] += 1
            for key, counter in (
                ("succeeded", self._succeeded),
                ("failed", self._failed),
            ):
                for name, count in counter.items():
                    if channel is None or name == channel:
                        row(name)[key] += count
        return result

    supports_listing: ClassVar[bool] = True

    def events(
        self, channel: str | None, status: str | None, limit: int
    ) -> list[EventInfo]:
        with self._lock:
            recs = [
                rec
                for rec in self._records.values()
                if (channel is None or rec.event.channel == channel)
                and (status is None or rec.status == status)
            ]
        recs.reverse()  # insertion order: newest last
        return [
            EventInfo(
                id=rec.event.id,
                channel=rec.event.channel,
                status=rec.status,
                payload=json.loads(rec.event.payload),
                attempts=rec.attempts,
                error=rec.error,
                available_at=rec.available_at,
                finished_at=rec.finished_at,
            )
            for rec in recs[:limit]
        ]

    def oldest_pending(self, channel: str) -> float | None:
        now = self.now()
        with self._lock:
            due = [
                rec.available_at
                for rec in self._records.values()
                if rec.event.channel == channel
                and rec.status == "pending"
                and rec.available_at <= now
            ]
        return min(due, default=None)

    def dead_letters(self, channel: str | None, limit: int) -> list[DeadLetter]:
        with self._lock:
            dead = [
                rec
                for rec in self._records.values()
                if rec.status == "dead"
                and (channel is None or rec.event.channel == channel)
            ]
        dead.sort(key=lambda rec: rec.finished_at or 0, reverse=True)
        return [
            DeadLetter(
                id=rec.event.id,
                channel=rec.event.channel,
                payload=json.loads(rec.event.payload),
                attempts=rec.attempts,
                error=rec.error,
                failed_at=datetime.fromtimestamp(rec.finished_at or 0, tz=UTC),
            )
            for rec in dead[:limit]
        ]

    def _dead(self, event_id: str) -> _Record:
        rec = self._records.get(event_id)
        if rec is None or rec.status != "dead":
            raise EventNotFound(f"No dead letter with id {event_id!r}.")
        return rec

    def retry_dead(self, event_id: str) -> None:
        with self._lock:
            rec = self._dead(event_id)
            rec.status = "pending"
            rec.attempts = 0
            rec.available_at = self.now()
            channel = rec.event.channel
        self.wake(channel)

    def discard_dead(self, event_id: str) -> None:
        with self._lock:
            self._dead(event_id)
            del self._records[event_id]
