"""Database locks: a lease table through the Django ORM (SQLite, PostgreSQL, …).

Every statement runs on a private worker thread of the backend, so on a connection
of its own: a lock taken inside the caller's ``transaction.atomic`` block is
committed (visible to other processes) at once, and a rollback of the caller's
block never undoes it.

Exclusion rests on one conditional ``UPDATE`` per attempt (free or expired, and
no live waiter ahead → ours) and the unique constraint on ``(app_name, key)`` for
the first insert. Waiters
queue in ``LockWaiter`` rows; the oldest live row goes first. Waiters in the same
process are woken at once by a release. On PostgreSQL (psycopg 3) a release also
sends ``NOTIFY`` and one ``LISTEN`` thread per backend wakes the waiters of other
processes at once; elsewhere they re-check every ``POLL_INTERVAL`` seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from django.db import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.db.models import Count, Exists, F, Q, Subquery, Value
from django.db.models.functions import Coalesce

from ...exceptions import BackendUnavailable
from . import database_sql, db_time
from .base import WAITER_LEASE, WAITER_REFRESH, LockBackend, LockInfo

T = TypeVar("T")

logger = logging.getLogger("mega_cluster.locks")

# Releases wake the waiters of every database lock backend of the process at once.
_released = threading.Condition()
_generation = [0]


def _wake() -> None:
    with _released:
        _generation[0] += 1
        _released.notify_all()


class DatabaseLockBackend(LockBackend):
    """Locks in a Django database: cluster-safe with no server besides the database.

    ``OPTIONS``: ``DATABASE`` (a ``DATABASES`` alias, default ``"default"``),
    ``POLL_INTERVAL`` (seconds between re-checks of a waiter, default 0.05) and
    ``LISTEN_DATABASE`` (the alias the ``LISTEN`` connection uses, default
    ``DATABASE``: a direct one when ``DATABASE`` goes through PgBouncer).
    Needs ``manage.py migrate`` (tables ``mega_cluster_locklease`` and
    ``mega_cluster_lockwaiter``). Lease ends are decided by the database server's
    clock on PostgreSQL (:mod:`.db_time`); every row is read and written on
    ``DATABASE`` itself (``using``), whatever a database router says.
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
        listen = options.get("LISTEN_DATABASE", alias)
        if listen not in settings.DATABASES:
            return [
                f"OPTIONS['LISTEN_DATABASE'] = {listen!r} is not a DATABASES alias "
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
        # LISTEN needs a session: through a transaction pooler it goes to a
        # direct connection instead (docs/deployment.md, PgBouncer)
        self.listen_alias = self.options.get("LISTEN_DATABASE", self.alias)
        self.poll = float(self.options.get("POLL_INTERVAL", 0.05))
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._stopping = threading.Event()
        self.channel = f"mc_locks_{self.app.name}"[:63]

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
        self,
        key: str,
        token: str,
        ttl: float,
        holder: str,
        waiter: str,
        refresh: bool,
        queued: bool,
    ) -> int | None:
        from ...models import LockLease

        leases, waiters = self._models()
        # the database server's clock on PostgreSQL (db_time)
        now = db_time.now(self.alias)
        expires = db_time.later(now, ttl)
        if self._raw_sql():
            fence = self._grant_raw(key, token, holder, waiter, ttl)
            if fence is not None:
                if waiter and queued:
                    waiters.filter(waiter=waiter).delete()
                return fence
            if leases.filter(key=key).exists():
                if waiter and refresh:
                    self._refresh_place(key, waiter, now)
                return None
        # Live waiters that go before us: all of them when we are not queued.
        ahead = waiters.filter(key=key, deadline__gte=now)
        if waiter:
            mine = waiters.filter(waiter=waiter).values("id")[:1]
            ahead = ahead.exclude(waiter=waiter).filter(
                id__lt=Coalesce(Subquery(mine), Value(2**62))
            )
        # One conditional UPDATE decides (autocommit, no transaction needed): free
        # or expired, and nobody ahead of us. Concurrent attempts serialise on the
        # row (PostgreSQL) or the database write lock (SQLite).
        granted = (
            leases.filter(key=key)
            .filter(Q(token="") | Q(expires_at__lt=now))
            .filter(~Exists(ahead))
            .update(
                token=token,
                holder=holder,
                fence=F("fence") + 1,
                acquired_at=now,
                expires_at=expires,
            )
        )
        if not granted and not leases.filter(key=key).exists():
            try:
                with transaction.atomic(using=self.alias):
                    LockLease.objects.using(self.alias).create(
                        app_name=self.app.name,
                        key=key,
                        token=token,
                        holder=holder,
                        fence=1,
                        acquired_at=now,
                        expires_at=expires,
                    )
                granted = 1
            except IntegrityError:  # another node inserted it first
                pass
        if granted:
            if waiter:
                waiters.filter(waiter=waiter).delete()
            # Read by our token: the fence is ours while the token is.
            return (
                leases.filter(key=key, token=token)
                .values_list("fence", flat=True)
                .first()
            )
        if waiter and refresh:
            self._refresh_place(key, waiter, now)
        return None

    def _refresh_place(self, key: str, waiter: str, now: Any) -> None:
        from ...models import LockWaiter

        waiters = self._models()[1]
        deadline = db_time.later(now, WAITER_LEASE)
        if not waiters.filter(waiter=waiter).update(deadline=deadline):
            waiters.filter(key=key, deadline__lt=now).delete()
            LockWaiter.objects.using(self.alias).create(
                app_name=self.app.name, key=key, waiter=waiter, deadline=deadline
            )

    def _raw_sql(self) -> bool:
        connection = connections[self.alias]
        return connection.vendor in ("postgresql", "sqlite") and bool(
            connection.features.can_return_columns_from_insert
        )

    def _grant_raw(
        self, key: str, token: str, holder: str, waiter: str, ttl: float
    ) -> int | None:
        """The ORM attempt's UPDATE plus the fence read in one statement."""
        return database_sql.grant(
            self.alias, self.app.name, key, token, holder, waiter, ttl
        )

    def _could_win(self, key: str, waiter: str) -> bool:
        """Reads only: is the key free (or expired) with ``waiter`` first in line?"""
        leases, waiters = self._models()
        now = db_time.now(self.alias)
        if leases.filter(key=key, expires_at__gte=now).exclude(token="").exists():
            return False
        head = (
            waiters.filter(key=key, deadline__gte=now)
            .order_by("id")
            .values_list("waiter", flat=True)
            .first()
        )
        return head is None or head == waiter

    def _leave(self, waiter: str) -> None:
        self._models()[1].filter(waiter=waiter).delete()
        self._notify()  # the next waiter may be first now

    def _release(self, key: str, token: str, fence: int | None = None) -> int:
        if token and connections[self.alias].vendor == "postgresql":
            return self._release_and_notify(key, token)
        now = db_time.now(self.alias)
        rows = self._models()[0].filter(key=key).exclude(token="")
        if token:
            rows = rows.filter(token=token)
        else:
            rows = rows.filter(expires_at__gte=now)
        rows = rows if fence is None else rows.filter(fence=fence)
        released = rows.update(token="", holder="", expires_at=now)
        if released:
            self._notify()
        return released

    def _release_and_notify(self, key: str, token: str) -> int:
        return database_sql.release_and_notify(
            self.alias, self.app.name, key, token, self.channel
        )

    def _notify(self) -> None:
        connection = connections[self.alias]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_notify(%s, '')", [self.channel])

    def _listen(self) -> None:
        """Wake this process's waiters on every NOTIFY of the app's channel."""
        import psycopg

        params = connections[self.listen_alias].get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        delay = 0.1
        while not self._stopping.is_set():
            try:
                with psycopg.connect(autocommit=True, **params) as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    delay = 0.1
                    _wake()  # anything released while we were not listening
                    while not self._stopping.is_set():
                        for _ in conn.notifies(timeout=0.25):
                            _wake()
            except Exception as exc:  # reconnect: waiters poll meanwhile
                logger.debug("lock LISTEN connection failed: %s", exc)
                self._stopping.wait(delay)
                delay = min(delay * 2, 5.0)

    def _ensure_listener(self) -> None:
        if self._listener is not None or connections[self.alias].vendor != "postgresql":
            return
        try:
            import psycopg  # noqa: F401
        except ImportError:  # psycopg2: no listener, waiters poll
            return
        with self._executor_lock:
            if self._listener is None:
                self._stopping.clear()
                self._listener = threading.Thread(
                    target=self._listen,
                    name=f"mc-locks-listen-{self.app.name}",
                    daemon=True,
                )
                self._listener.start()

    def _extend(self, key: str, token: str, ttl: float) -> int:
        now = db_time.now(self.alias)
        return (
            self._models()[0]
            .filter(key=key, token=token, expires_at__gte=now)
            .update(expires_at=db_time.later(now, ttl))
        )

    def _list(self) -> list[LockInfo]:
        leases, waiters = self._models()
        now = db_time.now(self.alias)
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
        if waiter:
            self._ensure_listener()
        refreshed = -WAITER_REFRESH
        woken, queued = True, False
        try:
            while True:
                generation = _generation[0]
                # After a wake-up (or to refresh our place in the queue) try at
                # once; after a plain poll timeout first check with reads only, so
                # idle waiters do not take SQLite's write lock.
                now = time.monotonic()
                refresh = now - refreshed >= WAITER_REFRESH / 2
                if woken or refresh or self._run(self._could_win, key, waiter):
                    if refresh:
                        refreshed = now
                    fence = self._run(
                        self._attempt, key, token, ttl, holder, waiter, refresh, queued
                    )
                    if fence is not None:
                        return fence
                    queued = bool(waiter)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with _released:
                    if generation == _generation[0]:
                        _released.wait(min(remaining, self.poll, WAITER_REFRESH))
                    woken = generation != _generation[0]
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

    def release(self, key: str, token: str) -> bool:
        released = bool(self._run(self._release, key, token))
        if released:
            _wake()
        return released

    def extend(self, key: str, token: str, ttl: float) -> bool:
        return bool(self._run(self._extend, key, token, ttl))

    def force_release(self, key: str, fence: int | None = None) -> bool:
        released = bool(self._run(self._release, key, "", fence))
        if released:
            _wake()
        return released

    def list_locks(self) -> list[LockInfo]:
        return self._run(self._list)

    def stop(self) -> None:
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.join(timeout=5)
        with self._executor_lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            try:
                executor.submit(self._close).result(timeout=10)
            finally:
                executor.shutdown(wait=True)
