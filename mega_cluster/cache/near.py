"""The per-process near cache (L1) in front of a shared store.

Entries are kept for at most ``max_age`` seconds and evicted least recently used
beyond ``max_entries``. Coherence across nodes comes from invalidation messages
(see :class:`~mega_cluster.cache.Cache`); ``max_age`` only bounds how long an entry
can outlive a message that never arrived.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

MISSING: Any = object()


class NearCache:
    def __init__(self, *, max_age: float, max_entries: int) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()
        # Bumped by every invalidation: a value read from the store before an
        # invalidation arrived must not be put back after it (see put()).
        self.epoch = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any:
        """The value, or ``MISSING`` when absent or too old."""
        entry = self._data.get(key)
        if entry is None:
            return MISSING
        if entry[1] <= time.monotonic():
            with self._lock:
                current = self._data.get(key)
                if current is entry:
                    del self._data[key]
            return MISSING
        return entry[0]

    def put(self, key: str, value: Any, ttl: float | None, epoch: int) -> None:
        """Keep ``value`` unless an invalidation happened since ``epoch`` was read."""
        age = self.max_age if ttl is None else min(ttl, self.max_age)
        with self._lock:
            if epoch != self.epoch:
                return
            self._data[key] = (value, time.monotonic() + age)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def invalidate(self, keys: Iterable[str]) -> None:
        with self._lock:
            self.epoch += 1
            for key in keys:
                self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self.epoch += 1
            self._data.clear()

    def after_fork(self) -> None:
        # In a forked child: the parent's thread may have held the lock at fork.
        self._lock = threading.Lock()
        self.epoch += 1
        self._data = OrderedDict()
