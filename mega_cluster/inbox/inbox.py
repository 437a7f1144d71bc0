"""One app's inbox: runs an idempotent handler in a transaction that records the
message id, skips a message whose effect already committed, prunes old rows."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction
from django.utils.connection import ConnectionDoesNotExist

from .. import metrics
from ..exceptions import ConfigurationError, MegaClusterError
from . import store

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.inbox")

SETTING = 'MEGA_CLUSTER["INBOX"]["DATABASE"]'
#: Longest consumer name stored as is; longer ones keep a prefix and a hash.
MAX_CONSUMER = 255
#: Longest message id stored as is; longer ones are hashed.
MAX_MESSAGE_ID = 64
#: Statements that write (what an idempotent handler must not run on another alias).
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT", "TRUNCATE")


class ForeignWrite(MegaClusterError, RuntimeError):
    """An idempotent handler wrote to a database other than its inbox's: that
    write would not be undone with the inbox record, so it is refused (the
    handler's attempt fails and its transaction rolls back)."""


class LostAttempt(MegaClusterError):
    """Raised for an event whose lost attempts spent its budget and whose effect
    had not committed: the event is dead-lettered without running again."""


def consumer_name(name: str) -> str:
    """``name`` as stored: at most :data:`MAX_CONSUMER` characters."""
    if len(name) <= MAX_CONSUMER:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:40]
    return f"{name[: MAX_CONSUMER - 41]}~{digest}"


class Inbox:
    """The inbox of one cluster app (``INBOX`` settings): the table
    ``mega_cluster_inbox`` on ``INBOX["DATABASE"]``."""

    def __init__(self, app: ClusterApp) -> None:
        section = app.settings.sections["INBOX"]
        self.app_name = app.name
        self.alias: str = section["DATABASE"]
        self.retention: float | None = section["RETENTION"]
        #: Duplicates skipped in this process, per consumer.
        self.skipped: dict[str, int] = {}
        self._lock = threading.Lock()
        self._next_prune = 0.0
        self._table_seen = False
        try:
            connections[self.alias]
        except ConnectionDoesNotExist:
            raise ConfigurationError(
                f"MEGA_CLUSTER app {app.name!r}: {SETTING} {self.alias!r} is not a "
                f"DATABASES alias; use one of {', '.join(connections)}."
            ) from None

    def __repr__(self) -> str:
        return f"<Inbox app={self.app_name!r} database={self.alias!r}>"

    def run(
        self,
        consumer: str,
        message_id: str,
        fn: Callable[..., Any],
        *args: Any,
        lost: str | None = None,
    ) -> bool:
        """``fn(*args)`` inside ``transaction.atomic(using=DATABASE)`` with the
        inbox row of ``(consumer, message_id)``; False (``fn`` not called, the
        duplicate counted) when that row had committed before.

        ``lost``: the lost attempts spent the event's budget: unless its effect
        committed, raise :class:`LostAttempt` with this error instead of running.
        """
        key = message_id
        if len(key) > MAX_MESSAGE_ID:
            key = hashlib.sha256(key.encode()).hexdigest()
        if not self._table_seen:
            self._check_table()
        with transaction.atomic(using=self.alias):
            fresh = store.record(self.alias, self.app_name, consumer, key, time.time())
            if fresh and lost is not None:
                raise LostAttempt(lost)
            if not fresh:
                store.count_skip(self.alias, self.app_name, consumer)
            else:
                with self._only_own_database(consumer):
                    fn(*args)
        if not fresh:
            self._skipped(consumer, message_id)
        self._maybe_prune()
        return fresh

    def _check_table(self) -> None:
        """``ConfigurationError`` naming the setting when the inbox table is not in
        the database (once per process; inside the handler's transaction a missing
        table would only say "no such table")."""
        connection = connections[self.alias]
        if store.TABLE not in connection.introspection.table_names():
            raise ConfigurationError(
                f"MEGA_CLUSTER app {self.app_name!r}: the inbox table "
                f"{store.TABLE} is missing from database {self.alias!r} ({SETTING}); "
                f"run `manage.py migrate --database {self.alias}`, or point "
                f"{SETTING} at a migrated database."
            )
        self._table_seen = True

    def recorded(self, consumer: str, message_id: str) -> bool:
        """Whether the effect of ``message_id`` committed for ``consumer``."""
        if len(message_id) > MAX_MESSAGE_ID:
            message_id = hashlib.sha256(message_id.encode()).hexdigest()
        return store.recorded(self.alias, self.app_name, consumer, message_id)

    def stats(self) -> dict[str, dict[str, int]]:
        """``{consumer: {"recorded": n, "skipped": m}}``: rows kept (younger than
        ``RETENTION``) and redeliveries skipped, cluster-wide."""
        return store.stats(self.alias, self.app_name)

    def prune(self) -> int:
        """Delete the rows older than ``RETENTION`` now; the number deleted."""
        if self.retention is None:
            return 0
        return store.prune(
            self.alias, self.app_name, time.time() - self.retention, batches=1_000_000
        )

    def _skipped(self, consumer: str, message_id: str) -> None:
        with self._lock:
            self.skipped[consumer] = self.skipped.get(consumer, 0) + 1
        metrics.inc("inbox_skipped", app=self.app_name, consumer=consumer)
        logger.info(
            "%s: message %s already handled (its effect committed); skipped",
            consumer,
            message_id,
            extra={"message_id": message_id, "consumer": consumer},
        )

    def _maybe_prune(self) -> None:
        if self.retention is None:
            return
        now = time.monotonic()
        with self._lock:
            if now < self._next_prune:
                return
            # twice per retention, at most every minute (as the event queue's prune)
            self._next_prune = now + min(60.0, max(0.1, self.retention / 2))
        try:
            store.prune(
                self.alias, self.app_name, time.time() - self.retention, batches=20
            )
        except Exception:
            logger.exception("pruning the inbox of app %s failed", self.app_name)

    @contextlib.contextmanager
    def _only_own_database(self, consumer: str) -> Iterator[None]:
        """Refuse writes on other aliases while the handler runs (this thread)."""
        with contextlib.ExitStack() as stack:
            for alias in connections:
                if alias != self.alias:
                    guard = _Guard(consumer, alias, self.alias)
                    stack.enter_context(connections[alias].execute_wrapper(guard))
            yield


class _Guard:
    __slots__ = ("alias", "consumer", "own")

    def __init__(self, consumer: str, alias: str, own: str) -> None:
        self.consumer = consumer
        self.alias = alias
        self.own = own

    def __call__(
        self, execute: Callable[..., Any], sql: str, params: Any, many: bool, ctx: Any
    ) -> Any:
        verb = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if verb in _WRITES:
            raise ForeignWrite(
                f"idempotent handler {self.consumer} wrote to database "
                f"{self.alias!r} ({verb} …), but its inbox is on {self.own!r} "
                f"({SETTING}): that write would not be undone with the inbox "
                "record, so a redelivery could repeat it. Write on "
                f"{self.own!r}, or point {SETTING} at {self.alias!r}."
            )
        return execute(sql, params, many, ctx)


_inboxes: weakref.WeakKeyDictionary[ClusterApp, Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def get_inbox(app: ClusterApp) -> Inbox:
    """The inbox of ``app`` (``get_inbox(get_app())``), built on first use;
    ``ConfigurationError`` when ``INBOX["DATABASE"]`` is not a DATABASES alias."""
    with _inboxes_lock:
        inbox = _inboxes.get(app)
        if inbox is None:
            inbox = _inboxes[app] = Inbox(app)
        return inbox
