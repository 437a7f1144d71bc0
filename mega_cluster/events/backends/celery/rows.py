"""The Celery backend's row writer: publishes insert their rows in batches.

``publish()`` on the Celery backend sends the message (which carries the event)
and leaves the row to this writer, so the publishing thread pays no database round
trip. One thread per backend inserts whatever has accumulated in one multi-row
``INSERT … ON CONFLICT DO NOTHING`` (a consumer that got the message first has
already written the row), committed lazily: the message can restore a lost row.
Readers of this process (stats, listings) flush first, so a publish is visible to
them at once; other processes see it once the writer caught up (milliseconds).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from django.db import connections

logger = logging.getLogger("mega_cluster.events.celery")

#: Rows per INSERT statement (bounded, so one statement's parameters stay small).
BATCH = 200
#: How long the writer lets rows gather once one is waiting (seconds).
GATHER = 0.01
#: An idle writer ends (closing its connection) after this many seconds.
IDLE_EXIT = 30.0


class RowWriter:
    def __init__(self, alias: str, write: Callable[[list[list[Any]]], None]) -> None:
        self.alias = alias
        self._write = write
        self._rows: list[list[Any]] = []
        self._lock = threading.Lock()  # guards _rows
        self._flushing = threading.Lock()  # one flush at a time, readers wait
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, row: list[Any]) -> None:
        with self._lock:
            self._rows.append(row)
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._run, name="mc-events-celery-rows", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def discard(self, event_id: str) -> None:
        with self._lock:
            self._rows = [row for row in self._rows if row[0] != event_id]

    def flush(self) -> None:
        """Write every row added so far (in the calling thread when any is left)."""
        with self._flushing:
            while True:
                with self._lock:
                    rows, self._rows = self._rows[:BATCH], self._rows[BATCH:]
                if not rows:
                    return
                try:
                    self._write(rows)
                except Exception:
                    # Each row's message restores it when consumed; the counts are
                    # what is lost meanwhile.
                    logger.exception(
                        "event queue: writing %d published rows failed", len(rows)
                    )
                    return

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._wake.wait(IDLE_EXIT):
                    with self._lock:
                        if not self._rows:  # add() starts a new writer later
                            self._thread = None
                            return
                    continue
                # Let a burst of publishes gather: one statement for all of them.
                self._stop.wait(GATHER)
                self._wake.clear()
                self.flush()
        finally:
            connections[self.alias].close()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        self.flush()
