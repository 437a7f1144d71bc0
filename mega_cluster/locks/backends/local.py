"""Process-local locks: exact semantics, no server, no protection across processes."""

from __future__ import annotations

import datetime as dt
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import ClassVar

from ... import node
from .base import LockBackend, LockInfo


@dataclass
class _Waiter:
    token: str
    holder: str
    ttl: float
    event: threading.Event = field(default_factory=threading.Event)
    fence: int | None = None  # set by the releasing thread: direct hand-off


@dataclass
class _Entry:
    token: str | None = None
    holder: str = ""
    fence: int = 0
    acquired_at: float = 0.0  # wall clock, for list_locks
    deadline: float = 0.0  # monotonic
    waiters: deque[_Waiter] = field(default_factory=deque)

    def held(self, now: float) -> bool:
        return self.token is not None and self.deadline > now


class _Store:
    """Every local lock of the process, keyed by (app name, key)."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.entries: dict[tuple[str, str], _Entry] = {}
        # One counter for every key: strictly increasing per key even though an
        # entry (and so any per-key counter) is dropped when the key is free.
        self.fences = itertools.count(1)
        self.sweep_at = 1024

    def sweep(self) -> None:
        """Drop expired entries nobody waits on (mutex held)."""
        if len(self.entries) < self.sweep_at:
            return
        now = time.monotonic()
        for ident, entry in list(self.entries.items()):
            if not entry.held(now) and not entry.waiters:
                del self.entries[ident]
        self.sweep_at = max(1024, 2 * len(self.entries))


_store = _Store()


def _reset_after_fork() -> None:
    # A forked child is a new node: it holds none of its parent's local locks.
    global _store
    _store = _Store()


node.on_fork(_reset_after_fork)


class LocalLockBackend(LockBackend):
    """Locks shared by the threads and event loops of one process only.

    Strict FIFO by direct hand-off: ``release`` gives the lock to the oldest waiter
    before anyone else can take it. Entries are dropped when a key is free and has
    no waiters, so the map never grows with the number of distinct keys.
    """

    cluster_safe: ClassVar[bool] = False
    supports_notification: ClassVar[bool] = True

    def _grant(self, entry: _Entry, token: str, holder: str, ttl: float) -> int:
        entry.token = token
        entry.holder = holder
        entry.fence = next(_store.fences)
        entry.acquired_at = time.time()
        entry.deadline = time.monotonic() + ttl
        return entry.fence

    def _hand_off(self, key: tuple[str, str], entry: _Entry) -> None:
        """Give a free entry to its oldest waiter, or drop the entry (mutex held)."""
        if entry.waiters:
            waiter = entry.waiters.popleft()
            waiter.fence = self._grant(entry, waiter.token, waiter.holder, waiter.ttl)
            waiter.event.set()
            return
        entry.token = None
        _store.entries.pop(key, None)

    def acquire(
        self, key: str, token: str, ttl: float, wait: float, holder: str
    ) -> int | None:
        ident = (self.app.name, key)
        deadline = time.monotonic() + wait
        store = _store
        with store.mutex:
            store.sweep()
            entry = store.entries.setdefault(ident, _Entry())
            now = time.monotonic()
            if not entry.held(now) and not entry.waiters:
                return self._grant(entry, token, holder, ttl)
            if wait <= 0:
                return None
            waiter = _Waiter(token, holder, ttl)
            entry.waiters.append(waiter)
        while True:
            with store.mutex:
                now = time.monotonic()
                timeout = min(deadline, entry.deadline) - now
            if waiter.event.wait(max(timeout, 0.0)):
                return waiter.fence
            with store.mutex:
                if waiter.fence is not None:  # granted while we timed out
                    return waiter.fence
                now = time.monotonic()
                if not entry.held(now) and entry.waiters[0] is waiter:
                    # The holder's lease ran out without a release: take it over.
                    entry.waiters.popleft()
                    return self._grant(entry, token, holder, ttl)
                if now >= deadline:
                    entry.waiters.remove(waiter)
                    if not entry.held(now):
                        self._hand_off(ident, entry)
                    return None

    def release(self, key: str, token: str) -> bool:
        ident = (self.app.name, key)
        with _store.mutex:
            entry = _store.entries.get(ident)
            if entry is None or entry.token != token:
                return False
            self._hand_off(ident, entry)
            return True

    def extend(self, key: str, token: str, ttl: float) -> bool:
        with _store.mutex:
            entry = _store.entries.get((self.app.name, key))
            now = time.monotonic()
            if entry is None or entry.token != token or not entry.held(now):
                return False
            entry.deadline = now + ttl
            return True

    def force_release(self, key: str, fence: int | None = None) -> bool:
        ident = (self.app.name, key)
        with _store.mutex:
            entry = _store.entries.get(ident)
            if entry is None or not entry.held(time.monotonic()):
                return False
            if fence is not None and entry.fence != fence:
                return False
            self._hand_off(ident, entry)
            return True

    def list_locks(self) -> list[LockInfo]:
        out = []
        with _store.mutex:
            mono, wall = time.monotonic(), time.time()
            for (app_name, key), entry in _store.entries.items():
                if app_name != self.app.name or not entry.held(mono):
                    continue
                out.append(
                    LockInfo(
                        key=key,
                        holder=entry.holder,
                        fence=entry.fence,
                        acquired_at=dt.datetime.fromtimestamp(
                            entry.acquired_at, dt.UTC
                        ),
                        expires_at=dt.datetime.fromtimestamp(
                            wall + entry.deadline - mono, dt.UTC
                        ),
                        waiters=len(entry.waiters),
                    )
                )
        return sorted(out, key=lambda info: info.key)
