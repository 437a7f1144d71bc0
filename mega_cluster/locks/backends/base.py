"""The contract every lock backend implements.

A lock backend is sync-native: the :class:`~mega_cluster.locks.LockManager` adds the
``a…`` twins, validation, defaults, the watchdog and the ``Lock`` handle on top.
Keys reach the backend exactly as the caller wrote them; the backend adds the app
namespace (``self.app.name``) on the wire so that two cluster apps using the same
key never exclude each other.

Semantics every backend shares (the contract suite in ``tests/locks`` proves them):

* **Exclusion.** At most one token holds a key at any time; a lease ends at
  ``release`` or when ``ttl`` seconds pass without ``extend``.
* **Fencing.** Every grant returns a fence, an integer strictly greater than every
  fence returned before for the same key (across processes and restarts where the
  backend's storage survives, see each backend).
* **FIFO.** Callers that wait are served first come, first served; a waiter that
  gives up or dies leaves the queue (dead waiters after a short lease) so it never
  stalls the ones behind it. ``wait=0`` never queues and never jumps the queue.
* **Stale tokens are harmless.** ``release`` and ``extend`` with a token that no
  longer holds the key change nothing and return False.
* **Errors.** When the server cannot be reached the call raises
  :class:`~mega_cluster.exceptions.BackendUnavailable` with the driver error as
  ``__cause__``; an unknown outcome is never reported as a grant.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from ...backends import Backend

#: How long a waiter's place in a shared queue lives without being refreshed. A
#: waiter that dies holds up the queue at most this long; live waiters refresh it
#: every ``WAITER_REFRESH`` seconds while they wait.
WAITER_LEASE = 3.0
WAITER_REFRESH = 1.0


@dataclass(frozen=True, kw_only=True)
class LockInfo:
    """One held lock as ``list_locks()`` reports it (times are aware UTC datetimes)."""

    key: str
    holder: str
    fence: int
    acquired_at: dt.datetime
    expires_at: dt.datetime
    waiters: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class LockBackend(Backend):
    """Base class of lock backends (see the module docstring for the semantics).

    ``supports_notification`` is True when waiters in other processes are woken by
    the server as soon as a lock is released; False when they re-check at the
    backend's poll interval (waiters in the same process are always woken at once).
    """

    supports_notification: ClassVar[bool] = False
    circuit_name: ClassVar[str] = "locks"
    guarded: ClassVar[tuple[str, ...]] = (
        "acquire",
        "release",
        "extend",
        "force_release",
        "list_locks",
    )

    def acquire(
        self, key: str, token: str, ttl: float, wait: float, holder: str
    ) -> int | None:
        """Take ``key`` for ``token`` for ``ttl`` seconds; return the fence.

        Waits up to ``wait`` seconds in the key's FIFO queue (``0``: one attempt,
        never queued). Returns None when the key is still held at the deadline.
        ``holder`` is the node id recorded for ``list_locks()``.
        """
        raise NotImplementedError

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token`` holds it and wake the next waiter.

        Returns False (and changes nothing) when ``token`` no longer holds it.
        """
        raise NotImplementedError

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Reset the lease of ``token`` on ``key`` to ``ttl`` seconds from now.

        Returns False when the lease already ended (expired, released or taken).
        """
        raise NotImplementedError

    def force_release(self, key: str, fence: int | None = None) -> bool:
        """Free ``key`` whoever holds it (operators only); True if it was held.

        With ``fence``, only the lease granted with that fence is freed: when the
        key is free or held under another fence (the lease the operator saw ended
        and the key changed hands since), nothing changes and False is returned.
        Fences are unique per key, so the fence names one lease.
        """
        raise NotImplementedError

    def list_locks(self) -> list[LockInfo]:
        """The locks of this app held right now, sorted by key."""
        raise NotImplementedError
