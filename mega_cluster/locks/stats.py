"""What ``LockManager.stats()`` and the lock metrics count, shared by the manager
and its :class:`~mega_cluster.locks.Lock` handles (internal)."""

from __future__ import annotations

import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .. import metrics

if TYPE_CHECKING:
    from .handle import Lock

COUNTERS = ("acquired", "released", "timeouts", "lost", "extended", "contended")


class LockStats:
    """This process's counters, wait times and held handles for one app's locks."""

    def __init__(self, app_name: str) -> None:
        self._lock = threading.Lock()
        self._held: weakref.WeakSet[Lock] = weakref.WeakSet()
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._wait_total = 0.0
        self._wait_max = 0.0
        # labelled once: looking labels up per call costs as much as the call
        self._observe_wait = metrics.histogram("lock_wait_seconds", app=app_name)
        self._observe_hold = metrics.histogram("lock_hold_seconds", app=app_name)

    def count(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` (one of :data:`COUNTERS`)."""
        with self._lock:
            self._counters[name] += n

    def attempted(self, waited: float, *, got: bool, wait: float) -> None:
        """One acquire attempt that took ``waited`` seconds (``wait``: its limit)."""
        self._observe_wait(waited)
        with self._lock:
            self._wait_total += waited
            self._wait_max = max(self._wait_max, waited)
            if got:
                self._counters["acquired"] += 1
            else:
                self._counters["timeouts" if wait > 0 else "contended"] += 1

    def held(self, lock: Lock) -> None:
        """``lock`` was just acquired by this process."""
        self._held.add(lock)

    def released(self, lock: Lock) -> None:
        """``lock`` was released (its hold time is observed)."""
        self._held.discard(lock)
        self.count("released")
        self._observe_hold(time.monotonic() - lock.acquired_monotonic)

    def held_locks(self) -> list[Lock]:
        """The handles acquired and not yet released (some may be lost)."""
        return [lock for lock in list(self._held) if not lock.released]

    def snapshot(self) -> dict[str, Any]:
        """``held`` right now, the counters and the wait times."""
        with self._lock:
            return {
                "held": sum(1 for lock in list(self._held) if not lock.released),
                **self._counters,
                "wait_seconds_total": round(self._wait_total, 6),
                "wait_seconds_max": round(self._wait_max, 6),
            }
