"""The :class:`Outbox` of one cluster app: rows written in the caller's transaction,
the sent marks, and the background thread that relays, polls and prunes."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction

from .. import metrics, node
from ..exceptions import ConfigurationError
from . import store

if TYPE_CHECKING:
    from ..events.backends.base import NewEvent
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.outbox")

#: Seconds between two prunes of the sent rows older than ``RETENTION``.
PRUNE_EVERY = 60.0
#: Seconds between two flushes of the sent marks (and the loop's tick).
TICK = 0.2


class Outbox:
    """Rows of sync messages and events, their after-commit send and the relay.

    ``write_sync`` / ``write_event`` run in the caller's transaction; the caller
    registers the after-commit send and reports it with :meth:`sent`. The marks are
    written in batches by a background thread, which also relays the rows nobody
    marked sent within ``RELAY_AFTER`` seconds (a sender that died between commit
    and send, or whose broker refused), in order per channel, backing off while
    the broker refuses; polls the sync channels' high-water marks; saves the
    receiver's cursors; and prunes sent rows older than ``RETENTION``.
    """

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        section = app.settings.outbox
        self.retention: float = section["RETENTION"]
        self.relay_after: float = section["RELAY_AFTER"]
        self.relay_interval: float = section["RELAY_INTERVAL"]
        self.relay_max_delay: float = section["RELAY_MAX_DELAY"]
        self.relay_batch: int = section["RELAY_BATCH"]
        self.high_water_every: float | None = section["HIGH_WATER_EVERY"]
        #: rows this process relayed for others (or for its own failed sends)
        self.relayed = 0
        #: relay rounds that failed (broker or database down)
        self.relay_failures = 0
        #: sync messages handled from the table instead of the wire
        self.replays = 0
        #: duplicates receivers skipped (a number already handled; the inbox of
        #: exactly-once handlers reports its own through :meth:`count_duplicate`)
        self.duplicates = 0
        #: databases the relay scans: default, and every one written or read here
        self.aliases: set[str] = {DEFAULT_DB_ALIAS}
        self._checked: set[str] = set()
        self._marks: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._relay_delay = self.relay_interval
        self._next_relay = 0.0
        self._next_prune = 0.0
        self._next_poll = 0.0
        self._tickers: list[Callable[[], None]] = []

    # writing (caller's transaction) -------------------------------------------------

    def check_database(self, alias: str) -> None:
        """``ConfigurationError`` when the outbox tables are not in ``alias``
        (checked once per database and process)."""
        if alias in self._checked:
            return
        from ..models import OutboxMessage

        table = OutboxMessage._meta.db_table  # noqa: SLF001 - Django's public model API
        if table not in connections[alias].introspection.table_names():
            raise ConfigurationError(
                f"The outbox table {table} is not in database {alias!r}: messages "
                f"published with transaction={alias!r} are written there. Run "
                f"'manage.py migrate --database={alias}' (or pass transaction=False "
                "to send at most once, without a row)."
            )
        self._checked.add(alias)
        self.aliases.add(alias)

    def write_sync(
        self, alias: str, channel: str, payload_json: str
    ) -> tuple[int, int]:
        """Number and store one sync message in the open transaction of ``alias``;
        ``(row id, seq)``."""
        self.check_database(alias)
        return store.insert_sync(
            alias, self.app.name, channel, self.app.node_id, payload_json
        )

    def write_event(self, alias: str, event: NewEvent) -> int:
        """Store one event in the open transaction of ``alias``; the row id."""
        self.check_database(alias)
        fields = {
            "id": event.id,
            "channel": event.channel,
            "payload": event.payload,
            "max_retries": event.max_retries,
            "timeout": event.timeout,
            "available_at": event.available_at,
            "dedupe_key": event.dedupe_key,
        }
        return store.insert(
            alias,
            app=self.app.name,
            kind="event",
            channel=event.channel,
            seq=None,
            node=self.app.node_id,
            payload=json.dumps(fields),
        )

    def sent(self, alias: str, row_id: int) -> None:
        """The row was handed to the broker: mark it sent (in the next batch)."""
        with self._lock:
            self._marks.setdefault(alias, []).append(row_id)
        self.ensure_running()

    def count_duplicate(self, amount: int = 1) -> None:
        """A redelivered or replayed message was skipped (counted, metric)."""
        self.duplicates += amount
        metrics.inc("outbox_duplicates", amount, app=self.app.name)

    def count_replay(self, channel: str, amount: int = 1) -> None:
        self.replays += amount
        metrics.inc("outbox_replays", amount, app=self.app.name, channel=channel)

    def add_ticker(self, tick: Callable[[], None]) -> None:
        """Call ``tick()`` every ``HIGH_WATER_EVERY`` seconds on the outbox thread
        (the sync receiver's high-water poll and cursor save)."""
        if tick not in self._tickers:
            self._tickers.append(tick)
        self.ensure_running()

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.ensure_running()

    def ensure_running(self) -> None:
        """Start the thread on a started node (idempotent; renewed after a fork)."""
        if not (self.app.started or self.app.starting):
            return
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's thread is not ours
                self._thread = None
                self._marks = {}
                self._pid = os.getpid()
                self._wake, self._stopped = threading.Event(), threading.Event()
            if self._thread is not None or self._stopped.is_set():
                return
            self._thread = threading.Thread(
                target=self._run,
                name=f"mega-cluster-outbox-{self.app.name}",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        """Flush the sent marks and stop the thread (bounded)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopped.set()
        if thread is not None:
            self._wake.set()
            thread.join(timeout=10)

    # the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopped.is_set():
                with node.fork_guard():
                    self._tick()
                self._wake.wait(TICK)
                self._wake.clear()
            with node.fork_guard():
                self._flush_marks()
                self._run_tickers()  # the last cursor save
        finally:
            with node.fork_guard():
                connections.close_all()

    def _tick(self) -> None:
        now = time.monotonic()
        self._flush_marks()
        if now >= self._next_relay:
            self._next_relay = now + self._relay_delay
            self._relay_round()
        if self.high_water_every is not None and now >= self._next_poll:
            self._next_poll = now + self.high_water_every
            self._run_tickers()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_EVERY
            self._prune()

    def _flush_marks(self) -> None:
        with self._lock:
            marks, self._marks = self._marks, {}
        for alias, ids in marks.items():
            try:
                store.mark_sent(alias, ids)
            except Exception as exc:  # the relay sends them again: duplicates only
                logger.warning(
                    "outbox: marking %d row(s) sent failed: %s", len(ids), exc
                )

    def _run_tickers(self) -> None:
        for tick in list(self._tickers):
            try:
                tick()
            except Exception:
                logger.exception(
                    "outbox: high-water poll failed (app %s)", self.app.name
                )

    def _prune(self) -> None:
        for alias in sorted(self.aliases):
            try:
                deleted = store.prune(alias, self.app.name, self.retention)
            except Exception as exc:
                logger.warning("outbox: pruning on database %s failed: %s", alias, exc)
                continue
            if deleted:
                logger.info("outbox: pruned %d sent row(s) on %s", deleted, alias)

    # relaying -------------------------------------------------------------------------

    def relay_once(self) -> int:
        """One relay round over every known database; how many rows it sent.
        Raises when the broker (or the database) refused."""
        total = 0
        for alias in sorted(self.aliases):
            total += self._relay_alias(alias)
        return total

    def _relay_round(self) -> None:
        try:
            sent = self.relay_once()
        except Exception as exc:
            self.relay_failures += 1
            self._relay_delay = min(self._relay_delay * 2, self.relay_max_delay)
            logger.warning(
                "outbox relay of app %s failed (%s); next try in %.1fs",
                self.app.name,
                exc,
                self._relay_delay,
            )
            return
        self._relay_delay = self.relay_interval
        if sent:
            self.relayed += sent
            metrics.inc("outbox_relayed", sent, app=self.app.name)
            logger.warning(
                "outbox relay of app %s sent %d message(s) their sender left unsent",
                self.app.name,
                sent,
            )

    def _relay_alias(self, alias: str) -> int:
        older_than = time.time() - self.relay_after
        if not store.has_unsent(alias, self.app.name, older_than):
            return 0
        done: list[int] = []
        with transaction.atomic(using=alias):
            rows = store.claim_unsent(
                alias, self.app.name, older_than, self.relay_batch
            )
            try:
                for row in rows:
                    try:
                        self._send_row(alias, row)
                    except Exception:
                        store.failed(alias, row.id)
                        raise
                    done.append(row.id)
            finally:
                if done:
                    store.mark_sent(alias, done)
        return len(done)

    def _send_row(self, alias: str, row: store.Row) -> None:
        if row.kind == "sync":
            self.app.sync_message_manager.relay(alias, row)
            return
        from ..events.backends.base import NewEvent

        event = NewEvent(**json.loads(row.payload))
        try:
            with transaction.atomic(
                using=self.app.event_queue.backend.transaction_alias()
            ):
                self.app.event_queue.backend.enqueue(event)
        except IntegrityError:
            pass  # its sender queued it before dying: already there

    # what the admin and the metrics show --------------------------------------------

    def backlog(self) -> dict[str, store.Backlog]:
        """Unsent rows and the oldest one's time, per known database."""
        return {
            alias: store.backlog(alias, self.app.name) for alias in sorted(self.aliases)
        }

    def oldest_unsent_age(self) -> float | None:
        """Seconds the oldest unsent row has waited (None: none waiting)."""
        oldest = [
            b.oldest_created_at
            for b in self.backlog().values()
            if b.oldest_created_at is not None
        ]
        return max(0.0, time.time() - min(oldest)) if oldest else None

    def as_dict(self) -> dict[str, Any]:
        backlog = self.backlog()
        return {
            "unsent": sum(b.unsent for b in backlog.values()),
            "oldest_unsent_age": self.oldest_unsent_age(),
            "relayed": self.relayed,
            "relay_failures": self.relay_failures,
            "replays": self.replays,
            "duplicates": self.duplicates,
        }
