"""One renewal thread per process for every auto-renewing lease.

The thread holds weak references only (python-redis-lock's design): a ``Lock``
handle that is dropped without ``release()`` stops being renewed and its lease
runs out at its TTL instead of living forever. Async code needs no separate path:
the backends are sync-native and the thread renews leases taken by ``aacquire`` /
``arun_exclusive`` / ``async with lock()`` the same way, even while the event loop
is busy.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
import weakref
from typing import TYPE_CHECKING

from .. import node

if TYPE_CHECKING:
    from .handle import Lock

#: After a failed renewal (server unreachable) try again this often until the
#: lease's own expiry, when the lock is marked lost.
RETRY_INTERVAL = 0.5


class Watchdog:
    """Renews registered locks at ``ttl / 3`` on a daemon thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, weakref.ref[Lock]]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def register(self, lock: Lock) -> None:
        self.schedule(lock, time.monotonic() + lock.ttl / 3)

    def schedule(self, lock: Lock, due: float) -> None:
        with self._cond:
            heapq.heappush(self._heap, (due, next(self._order), weakref.ref(lock)))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="mega_cluster-lock-watchdog", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def stop_if_idle(self, timeout: float = 5.0) -> bool:
        """End the thread now when no live lease is left to renew (it otherwise
        lingers 30 s); True when no thread runs afterwards. For the testing kit."""
        with self._cond:
            self._heap = [
                entry
                for entry in self._heap
                if (lock := entry[2]()) is not None and lock.renewing
            ]
            heapq.heapify(self._heap)
            if self._heap:
                return False
            thread, self._thread = self._thread, None
            self._quit = thread
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            return not thread.is_alive()
        return True

    _quit: threading.Thread | None = None

    def _run(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cond:
                while True:
                    if self._quit is me:
                        return
                    if not self._heap:
                        # Idle: let the thread end; schedule() starts a new one.
                        if not self._cond.wait(timeout=30.0) and not self._heap:
                            if self._thread is me:
                                self._thread = None
                            return
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._cond.wait(timeout=delay)
                _, _, ref = heapq.heappop(self._heap)
            lock = ref()
            if lock is None or not lock.renewing:
                continue
            with node.fork_guard():
                next_due = lock.renew_for_watchdog()
            if next_due is not None:
                self.schedule(lock, next_due)


_watchdog: Watchdog | None = None
_watchdog_lock = threading.Lock()


def get_watchdog() -> Watchdog:
    global _watchdog
    if _watchdog is None:
        with _watchdog_lock:
            if _watchdog is None:
                _watchdog = Watchdog()
    return _watchdog


def _reset_after_fork() -> None:
    # The parent's thread does not exist in the child, nor do its leases.
    global _watchdog, _watchdog_lock
    _watchdog = None
    _watchdog_lock = threading.Lock()


node.on_fork(_reset_after_fork)
