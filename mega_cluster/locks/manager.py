"""``app.lock_manager``: distributed locks with fencing, renewal and FIFO waiters."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from asgiref.sync import sync_to_async

from ..backends import load_backend
from ..calls import acall
from ..exceptions import (
    LockLost,
    LockTimeout,
)
from ..validation import MAX_LOCK_KEY_BYTES, validate_lock_key, validate_seconds
from .backends.base import LockBackend, LockInfo
from .handle import Lock
from .stats import LockStats

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.locks")

T = TypeVar("T")

#: Longest key accepted, in UTF-8 bytes.
MAX_KEY_BYTES = MAX_LOCK_KEY_BYTES


def _in_thread(fn: Callable[..., T]) -> Callable[..., Awaitable[T]]:
    # Waiting for a lock can take `wait` seconds: never on Django's single
    # thread-sensitive executor, where it would queue every other sync call.
    return sync_to_async(fn, thread_sensitive=False)


class LockManager:
    """The distributed locks of one cluster app (``app.lock_manager``).

    Keys are what the caller writes (any non-empty string of at most 512 UTF-8
    bytes); the app name is added on the wire, so two cluster apps never exclude
    each other with the same key. ``ttl`` and ``wait`` are seconds and default to
    ``MEGA_CLUSTER[...]["LOCKS"]["TTL"]`` (30) and ``["WAIT"]`` (10).

    Locks are not reentrant: acquiring a key the same caller already holds waits
    for it like anyone else. Every method has an ``a``-prefixed async twin.
    """

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        section = app.settings.locks
        self.backend = load_backend(app, "LOCKS", LockBackend)
        backend = section.backend
        assert backend is not None  # load_backend raised otherwise
        self.backend_name = backend.alias or backend.path
        self.default_ttl: float = section["TTL"]
        self.default_wait: float = section["WAIT"]
        #: counters, wait and hold times, held handles (shared with the handles).
        self.lock_stats = LockStats(app.name)

    def __repr__(self) -> str:
        return f"<LockManager app={self.app.name!r} backend={self.backend_name!r}>"

    # validation ----------------------------------------------------------------------

    @staticmethod
    def _key(key: object) -> str:
        return validate_lock_key(key)

    def check_ttl(self, ttl: object) -> float:
        """``ttl`` in seconds (None: the default TTL); ValueError when invalid."""
        if ttl is None:
            return self.default_ttl
        return validate_seconds(ttl, "ttl", allow_zero=False)

    def _wait(self, wait: object) -> float:
        if wait is None:
            return self.default_wait
        return validate_seconds(wait, "wait")

    def _take(
        self, key: object, ttl: object, wait: float, auto_extend: bool
    ) -> Lock | None:
        key = self._key(key)
        ttl = self.check_ttl(ttl)
        token = secrets.token_hex(16)
        started = time.monotonic()
        fence = self.backend.acquire(key, token, ttl, wait, self.app.node_id)
        self.lock_stats.attempted(
            time.monotonic() - started, got=fence is not None, wait=wait
        )
        if fence is None:
            return None
        lock = Lock(self, key, token, fence, ttl, auto_extend=auto_extend)
        self.lock_stats.held(lock)
        return lock

    # sync API ------------------------------------------------------------------------

    def acquire(
        self,
        key: str,
        ttl: float | None = None,
        *,
        wait: float | None = None,
        auto_extend: bool = False,
    ) -> Lock:
        """Take ``key``, waiting up to ``wait`` seconds in FIFO order.

        The lease ends after ``ttl`` seconds unless extended; ``auto_extend=True``
        lets the watchdog renew it at ``ttl / 3`` until ``release()``. Raises
        ``LockTimeout`` when the key is still held after ``wait``,
        ``BackendUnavailable`` when the server cannot be reached, ``InvalidLockKey``
        for a bad key.
        """
        wait_s = self._wait(wait)
        lock = self._take(key, ttl, wait_s, auto_extend)
        if lock is None:
            raise LockTimeout(
                f"Lock {key!r} of app {self.app.name!r} is still held after waiting "
                f"{wait_s:g}s; pass a larger wait= or check list_locks() for the "
                "holder."
            )
        return lock

    def try_acquire(
        self, key: str, ttl: float | None = None, *, auto_extend: bool = False
    ) -> Lock | None:
        """Take ``key`` if it is free and nobody waits for it, else return None."""
        return self._take(key, ttl, 0.0, auto_extend)

    def run_exclusive(
        self,
        key: str,
        fn: Callable[[], T],
        ttl: float | None = None,
        *,
        wait: float | None = None,
    ) -> T:
        """Run ``fn()`` holding ``key`` (renewed by the watchdog) and return its result.

        Raises ``LockTimeout`` (``fn`` not run) when the key stays held for
        ``wait`` seconds, and ``LockLost`` after ``fn`` returns when the lease was
        lost while it ran, so the section was not protected. Never skips ``fn``
        silently.
        """
        lock = self.acquire(key, ttl, wait=wait, auto_extend=True)
        try:
            result = fn()
        finally:
            lock.release_quietly()
        if lock.lost:
            raise LockLost(lock.lost_message())
        return result

    def lock(
        self, key: str, ttl: float | None = None, *, wait: float | None = None
    ) -> LockContext:
        """``with`` / ``async with`` block holding ``key``; yields the ``Lock``.

        Same semantics as :meth:`run_exclusive`: renewed while the block runs,
        ``LockTimeout`` on entry, ``LockLost`` on a normal exit when the lease was
        lost.
        """
        return LockContext(self, key, ttl, wait)

    def force_release(self, key: str, *, fence: int | None = None) -> bool:
        """Free ``key`` whoever holds it (operators, admin); True if it was held.

        With ``fence`` (from ``list_locks()``), only that lease is freed: if the
        key was released and taken again since (another fence) or is free,
        nothing changes and False is returned, so an operator never frees a
        lease they did not see. The holder's next renewal or release finds its
        lease gone and marks its lock ``lost``.
        """
        if fence is not None and (
            isinstance(fence, bool) or not isinstance(fence, int)
        ):
            raise TypeError(f"fence must be an int (from list_locks()), got {fence!r}")
        released = self.backend.force_release(self._key(key), fence)
        if released:
            logger.warning(
                "lock %r of app %s (fence %s) force-released from node %s",
                key,
                self.app.name,
                "any" if fence is None else fence,
                self.app.node_id,
            )
        return released

    def list_locks(self) -> list[LockInfo]:
        """The app's held locks: ``key``, ``holder`` (node id), ``fence``,
        ``acquired_at``, ``expires_at`` (aware datetimes) and ``waiters``."""
        return self.backend.list_locks()

    def stats(self) -> dict[str, Any]:
        """This process's counters for the app's locks (plus ``held`` right now)."""
        return {"backend": self.backend_name, **self.lock_stats.snapshot()}

    def held_locks(self) -> list[Lock]:
        """The handles this manager handed out and that are not released yet
        (a handle whose lease was lost stays listed until ``release()``)."""
        return self.lock_stats.held_locks()

    # async twins -----------------------------------------------------------------------

    async def aacquire(
        self,
        key: str,
        ttl: float | None = None,
        *,
        wait: float | None = None,
        auto_extend: bool = False,
    ) -> Lock:
        return await _in_thread(self.acquire)(
            key, ttl, wait=wait, auto_extend=auto_extend
        )

    async def atry_acquire(
        self, key: str, ttl: float | None = None, *, auto_extend: bool = False
    ) -> Lock | None:
        return await _in_thread(self.try_acquire)(key, ttl, auto_extend=auto_extend)

    async def arun_exclusive(
        self,
        key: str,
        fn: Callable[[], Any],
        ttl: float | None = None,
        *,
        wait: float | None = None,
    ) -> Any:
        """Like :meth:`run_exclusive`; an ``async def`` ``fn`` is awaited, a plain
        one runs in a worker thread (:func:`mega_cluster.calls.acall`)."""
        lock = await self.aacquire(key, ttl, wait=wait, auto_extend=True)
        try:
            result = await acall(fn)
        finally:
            await _in_thread(lock.release_quietly)()
        if lock.lost:
            raise LockLost(lock.lost_message())
        return result

    async def aforce_release(self, key: str, *, fence: int | None = None) -> bool:
        return await _in_thread(self.force_release)(key, fence=fence)

    async def alist_locks(self) -> list[LockInfo]:
        return await _in_thread(self.list_locks)()

    async def astats(self) -> dict[str, Any]:
        return self.stats()

    # lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.backend.start()

    def stop(self) -> None:
        """Release the locks this manager still holds (best effort), then stop."""
        for lock in self.held_locks():
            try:
                lock.release()
            except Exception:
                logger.warning("could not release lock %r at stop", lock.key)
        self.backend.stop()


class LockContext:
    """What :meth:`LockManager.lock` returns: a sync and async context manager."""

    def __init__(
        self, manager: LockManager, key: str, ttl: float | None, wait: float | None
    ) -> None:
        self.manager = manager
        self.key, self.ttl, self.wait = key, ttl, wait
        self.lock: Lock | None = None

    def __enter__(self) -> Lock:
        self.lock = self.manager.acquire(
            self.key, self.ttl, wait=self.wait, auto_extend=True
        )
        return self.lock

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lock, self.lock = self.lock, None
        if lock is None:
            return
        lock.release_quietly()
        if exc_type is None and lock.lost:
            raise LockLost(lock.lost_message())

    async def __aenter__(self) -> Lock:
        self.lock = await self.manager.aacquire(
            self.key, self.ttl, wait=self.wait, auto_extend=True
        )
        return self.lock

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lock, self.lock = self.lock, None
        if lock is None:
            return
        await _in_thread(lock.release_quietly)()
        if exc_type is None and lock.lost:
            raise LockLost(lock.lost_message())
