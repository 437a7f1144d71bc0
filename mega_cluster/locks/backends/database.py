"""Database locks: a lease table through the Django ORM (SQLite, PostgreSQL, …).

Every statement runs on a private worker thread of the backend, so on a connection
of its own: a lock taken inside the caller's ``transaction.atomic`` block is
committed (visible to other processes) at once, and a rollback of the caller's
block never undoes it.

Exclusion rests on one conditional ``UPDATE`` (free or expired → ours) per attempt
and the unique constraint on ``(app_name, key)`` for the first insert. Waiters
queue in ``LockWaiter`` rows; the oldest live row goes first. Waiters in the same
process are woken at once by a release; waiters in other processes re-check every
``POLL_INTERVAL`` seconds (no database-independent notification exists).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.db.models import Count, F, Q
from django.utils import timezone

from ...exceptions import BackendUnavailable
from .base import WAITER_LEASE, WAITER_REFRESH, LockBackend, LockInfo

T = TypeVar("T")

# Releases wake the waiters of every database lock backend of the process at once.
_released = threading.Condition()
_generation = [0]


class DatabaseLockBackend(LockBackend):
    """Locks in a Django database: cluster-safe with no server besides the database.

    ``OPTIONS``: ``DATABASE`` (a ``DATABASES`` alias, default ``"default"``) and
    ``POLL_INTERVAL`` (seconds between re-checks of a waiter, default 0.05).
    Needs ``manage.py migrate`` (tables ``mega_cluster_locklease`` and
    ``mega_cluster_lockwaiter``).
    """

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        from django.conf import settings

        alias = options.get("DATABASE", "default")
        if alias not in settings.DATABASES:
            return [
                f"OPTIONS['DATABASE'] = {alias!r} is not a DATABASES alias "
                f"(defined: {', '.join(settings.DATABASES)})."
            ]
        poll = options.get("POLL_INTERVAL", 0.05)
        if isinstance(poll, bool) or not isinstance(poll, int | float) or poll <= 0:
            return [
                f"OPTIONS['POLL_INTERVAL'] must be a positive number, got {poll!r}."
            ]
        return []

    def __init__(self, app: Any, options: Mapping[str, Any]) -> None:
        super().__init__(app, options)
        self.alias = self.options.get("DATABASE", "default")
        self.poll = float(self.options.get("POLL_INTERVAL", 0.05))
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    # the private connection ------------------------------------------------------------

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        with self._executor_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"mc-locks-{self.app.name}"
                )
            executor = self._executor
        return executor.submit(self._guarded, fn, *args).result()

    def _guarded(self, fn: Callable[..., T], *args: Any) -> T:
        connection = connections[self.alias]
        try:
            # After a failed statement (server restarted, connection dropped). Not
            # close_if_unusable_or_obsolete(): with CONN_MAX_AGE=0 it would
            # reconnect for every statement.
            if connection.connection is not None and connection.errors_occurred:
                if connection.is_usable():
                    connection.errors_occurred = False
                else:
                    connection.close()
            return fn(*args)
        except (OperationalError, InterfaceError) as exc:
            raise BackendUnavailable(
                f"Database lock backend of app {self.app.name!r} cannot use database "
                f"{self.alias!r}: {exc}"
            ) from exc

    def _models(self) -> tuple[Any, Any]:
        from ...models import LockLease, LockWaiter

        return (
            LockLease.objects.using(self.alias).filter(app_name=self.app.name),
            LockWaiter.objects.using(self.alias).filter(app_name=self.app.name),
        )

    # statements (run on the private thread) ------------------------------------------

    def _attempt(
        self, key: str, token: str, ttl: float, holder: str, waiter: str
    ) -> int | None:
        from ...models import LockLease, LockWaiter

        leases, waiters = self._models()
        now = timezone.now()
        with transaction.atomic(using=self.alias):
            # A write first, so SQLite takes its write lock here and waits for it;
            # a read first would make the later write fail with "database is locked".
            waiters.filter(key=key, deadline__lt=now).delete()
            head = (
                waiters.filter(key=key).order_by("id").values_list("waiter", flat=True)
            ).first()
            if head is None or head == waiter:
                row = leases.filter(key=key)
                granted = row.filter(Q(token="") | Q(expires_at__lt=now)).update(
                    token=token,
                    holder=holder,
                    fence=F("fence") + 1,
                    acquired_at=now,
                    expires_at=now + timedelta(seconds=ttl),
                )
                if not granted and not row.exists():
                    try:
                        with transaction.atomic(using=self.alias):
                            LockLease.objects.using(self.alias).create(
                                app_name=self.app.name,
                                key=key,
                                token=token,
                                holder=holder,
                                fence=1,
                                acquired_at=now,
                                expires_at=now + timedelta(seconds=ttl),
                            )
                        granted = 1
                    except IntegrityError:  # another node inserted it first
                        pass
                if granted:
                    if head is not None:
                        waiters.filter(waiter=waiter).delete()
                    return row.values_list("fence", flat=True).get()
            if waiter:
                deadline = now + timedelta(seconds=WAITER_LEASE)
                if not waiters.filter(waiter=waiter).update(deadline=deadline):
                    LockWaiter.objects.using(self.alias).create(
                        app_name=self.app.name,
                        key=key,
                        waiter=waiter,
                        deadline=deadline,
                    )
        return None

    def _leave(self, waiter: str) -> None:
        self._models()[1].filter(waiter=waiter).delete()

    def _release(self, key: str, token: str) -> int:
        now = timezone.now()
        rows = self._models()[0].filter(key=key).exclude(token="")
        if token:
            rows = rows.filter(token=token)
        else:
            rows = rows.filter(expires_at__gte=now)
        return rows.update(token="", holder="", expires_at=now)

    def _extend(self, key: str, token: str, ttl: float) -> int:
        now = timezone.now()
        return (
            self._models()[0]
            .filter(key=key, token=token, expires_at__gte=now)
            .update(expires_at=now + timedelta(seconds=ttl))
        )

    def _list(self) -> list[LockInfo]:
        leases, waiters = self._models()
        now = timezone.now()
        rows = list(
            leases.exclude(token="")
            .filter(expires_at__gte=now)
            .values_list("key", "holder", "fence", "acquired_at", "expires_at")
        )
        counts = dict(
            waiters.filter(key__in=[r[0] for r in rows], deadline__gte=now)
            .values("key")
            .annotate(n=Count("id"))
            .values_list("key", "n")
        )
        return [
            LockInfo(
                key=key,
                holder=holder,
                fence=fence,
                acquired_at=acquired,
                expires_at=expires,
                waiters=counts.get(key, 0),
            )
            for key, holder, fence, acquired, expires in rows
        ]

    def _close(self) -> None:
        connections[self.alias].close()

    # contract ------------------------------------------------------------------------

    def acquire(
        self, key: str, token: str, ttl: float, wait: float, holder: str
    ) -> int | None:
        waiter = token if wait > 0 else ""
        deadline = time.monotonic() + wait
        try:
            while True:
                generation = _generation[0]
                fence = self._run(self._attempt, key, token, ttl, holder, waiter)
                if fence is not None:
                    return fence
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with _released:
                    if generation == _generation[0]:
                        _released.wait(min(remaining, self.poll, WAITER_REFRESH))
        except BaseException:
            if waiter:
                self._quietly(self._leave, waiter)
            # The grant may have been committed with its result lost: undo it.
            self._quietly(self._release, key, token)
            raise
        if waiter:
            self._run(self._leave, waiter)
        return None

    def _quietly(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._run(fn, *args)
        except Exception:  # best effort while already failing
            pass

    def _wake(self) -> None:
        with _released:
            _generation[0] += 1
            _released.notify_all()

    def release(self, key: str, token: str) -> bool:
        released = bool(self._run(self._release, key, token))
        if released:
            self._wake()
        return released

    def extend(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._run(self._extend, key, token, ttl))

    def force_release(self, key: str) -> bool:
        released = bool(self._run(self._release, key, ""))
        if released:
            self._wake()
        return released

    def list_locks(self) -> list[LockInfo]:
        return self._run(self._list)

    def ping(self) -> None:
        def select_one() -> None:
            with connections[self.alias].cursor() as cursor:
                cursor.execute("SELECT 1")

        self._run(select_one)

    def stop(self) -> None:
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            try:
                executor.submit(self._close).result(timeout=10)
            finally:
                executor.shutdown(wait=True)
