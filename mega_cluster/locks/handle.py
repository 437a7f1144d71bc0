"""The :class:`Lock` handle returned by the lock manager."""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async

from ..exceptions import BackendUnavailable
from .watchdog import RETRY_INTERVAL, get_watchdog

if TYPE_CHECKING:
    from .manager import LockManager

logger = logging.getLogger("mega_cluster.locks")


class Lock:
    """A held lease on ``key``: ``token`` identifies it, ``fence`` orders it.

    ``fence`` is strictly greater than the fence of every earlier holder of the
    key: pass it along with writes the lock protects and have the storage reject a
    write carrying a smaller fence than one it already accepted (see
    docs/locks.md). ``lost`` becomes True once the lease is known to have ended
    while this handle still meant to hold it: a failed renewal, an ``extend()``
    that returned False, or a ``release()`` that found the lease already gone.
    """

    def __init__(
        self,
        manager: LockManager,
        key: str,
        token: str,
        fence: int,
        ttl: float,
        *,
        auto_extend: bool = False,
    ) -> None:
        self.manager = manager
        self.key = key
        self.token = token
        self.fence = fence
        self.ttl = ttl
        self.auto_extend = auto_extend
        self.acquired_monotonic = time.monotonic()  # for the hold-time metric
        self._lease_end = self.acquired_monotonic + ttl
        self._lost = False
        #: Why the lease was lost, once it was (``LockLost`` says it too).
        self.lost_reason: str | None = None
        self._losing = False  # _mark_lost ran (it sets _lost once it logged)
        self._released = False
        self._mutex = threading.Lock()
        if auto_extend:
            get_watchdog().register(self)

    def __repr__(self) -> str:
        state = "lost" if self._lost else "released" if self._released else "held"
        return f"<Lock {self.key!r} fence={self.fence} {state}>"

    @property
    def lost(self) -> bool:
        """True once the lease is known lost (the section was not protected)."""
        return self._lost

    @property
    def released(self) -> bool:
        return self._released

    @property
    def renewing(self) -> bool:
        return self.auto_extend and not self._released and not self._lost

    def _mark_lost(self, why: str) -> None:
        with self._mutex:
            if self._losing:
                return
            self._losing = True
        self.lost_reason = why
        # Counted and logged before ``lost`` turns True: whoever sees the flag
        # finds the warning and the ``stats()`` count already there.
        self.manager.lock_stats.count("lost")
        logger.warning(
            "lock %r of app %s lost on node %s (fence %d): %s",
            self.key,
            self.manager.app.name,
            self.manager.app.node_id,
            self.fence,
            why,
        )
        self._lost = True

    def release(self) -> None:
        """Free the lock and wake the next waiter; idempotent.

        Never frees a later holder: when this lease has already ended (and maybe
        another node holds the key now) nothing changes and ``lost`` becomes True.
        Raises ``BackendUnavailable`` when the server cannot be reached (the lease
        then ends at its TTL); calling again retries.
        """
        with self._mutex:
            if self._released:
                return
            # Stop renewing now: if the release below fails the lease must still
            # end at its TTL, not be kept alive by the watchdog.
            self.auto_extend = False
        freed = self.manager.backend.release(self.key, self.token)
        with self._mutex:
            if self._released:
                return
            self._released = True
        self.manager.lock_stats.released(self)
        if not freed:
            self._mark_lost(self._gone("release() found the lease gone"))

    def extend(self, ttl: float | None = None) -> bool:
        """Make the lease end ``ttl`` seconds from now (default: the lock's TTL).

        Returns False, and marks the lock lost, when the lease already ended; a
        released lock returns False too. A given ``ttl`` becomes the lock's TTL (the
        watchdog renews with it from then on).
        """
        ttl = self.manager.check_ttl(ttl) if ttl is not None else self.ttl
        if self._released or self._lost:
            return False
        ok = self.manager.backend.extend(self.key, self.token, ttl)
        if ok:
            self.ttl = ttl
            self._lease_end = time.monotonic() + ttl
            self.manager.lock_stats.count("extended")
        else:
            self._mark_lost(self._gone("extend() found the lease gone"))
        return ok

    def renew_for_watchdog(self) -> float | None:
        """One renewal, run by the watchdog thread (not for callers): returns the
        monotonic time the next one is due, None to stop renewing."""
        if not self.renewing:
            return None
        try:
            ok = self.manager.backend.extend(self.key, self.token, self.ttl)
        except BackendUnavailable as exc:
            now = time.monotonic()
            if now >= self._lease_end:
                self._mark_lost(
                    f"renewal failed until the lease ended: {exc}; check the lock "
                    "backend's health"
                )
                return None
            return min(now + RETRY_INTERVAL, self._lease_end)
        except Exception as exc:  # a bug must not kill the watchdog thread
            self._mark_lost(f"renewal raised {exc!r}")
            return None
        if not self.renewing:  # released while we renewed
            return None
        if not ok:
            self._mark_lost(self._gone("the watchdog's renewal found the lease gone"))
            return None
        now = time.monotonic()
        self._lease_end = now + self.ttl
        self.manager.lock_stats.count("extended")
        return now + self.ttl / 3

    def _gone(self, found: str) -> str:
        """Why a lease the backend no longer holds for us ended: taken away while
        it still had time to run (by this process's clock), or run out."""
        left = self._lease_end - time.monotonic()
        if left > min(1.0, self.ttl / 10):  # well before its end: not the TTL
            return (
                f"{found} {left:.1f}s before its ttl would have ended: it was "
                "released or taken over, e.g. by a force release (the admin's "
                "Locks page or force_release())"
            )
        return (
            f"{found}: its ttl of {self.ttl:g}s ran out before it was renewed or "
            "released (a process paused longer than the ttl); raise the ttl or use "
            "auto_extend"
        )

    def release_quietly(self) -> None:
        """:meth:`release` at the end of a section: a server that cannot be reached
        is logged, not raised (the lease ends at its TTL)."""
        try:
            self.release()
        except BackendUnavailable as exc:
            logger.warning(
                "releasing lock %r of app %s failed (%s); it frees itself in %gs",
                self.key,
                self.manager.app.name,
                exc,
                self.ttl,
            )

    def lost_message(self) -> str:
        """The ``LockLost`` message of a section that ran without its lease."""
        return (
            f"Lock {self.key!r} of app {self.manager.app.name!r} (fence {self.fence}) "
            "was lost while the section ran, so it was not protected: "
            f"{self.lost_reason}."
        )

    async def arelease(self) -> None:
        await sync_to_async(self.release, thread_sensitive=False)()

    async def aextend(self, ttl: float | None = None) -> bool:
        return await sync_to_async(self.extend, thread_sensitive=False)(ttl)

    def __enter__(self) -> Lock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    async def __aenter__(self) -> Lock:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.arelease()
