"""The thread that decides ticks on a ``runworker`` node (one per cluster app)."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import TYPE_CHECKING

from django.db import connections

if TYPE_CHECKING:
    from .scheduler import Schedules

logger = logging.getLogger("mega_cluster.schedules")

#: Seconds between prunes of old runs.
PRUNE_EVERY = 300.0
#: Shortest sleep between passes (a tick due "now" on a busy database).
MIN_WAIT = 0.05


class SchedulerThread:
    """Runs :meth:`Schedules.tick` whenever a job may be due, at most
    ``SCHEDULES["INTERVAL"]`` seconds apart; prunes old runs now and then."""

    def __init__(self, schedules: Schedules) -> None:
        self.schedules = schedules
        self.interval: float = schedules.settings["INTERVAL"]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned_at = 0.0

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._run,
            name=f"mc-schedules-{self.schedules.app.name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._stop.wait(self._pass())
        finally:
            connections.close_all()

    def _pass(self) -> float:
        """One pass; the seconds to sleep before the next."""
        schedules = self.schedules
        try:
            schedules.tick()
            self._prune()
            upcoming = schedules.next_due
            if upcoming is None:
                return self.interval
            # a delta on the store's clock, slept on this node's monotonic clock
            wait = (upcoming - schedules.store.now()).total_seconds()
            return min(self.interval, max(MIN_WAIT, wait))
        except Exception:
            logger.exception("periodic jobs of app %s: pass failed", schedules.app.name)
            for connection in connections.all(initialized_only=True):
                if not connection.is_usable():
                    connection.close()
            return self.interval

    def _prune(self) -> None:
        if time.monotonic() - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = time.monotonic()
        store = self.schedules.store
        retention = dt.timedelta(seconds=self.schedules.settings["RETENTION"])
        deleted = store.prune(store.now() - retention)
        if deleted:
            logger.info("periodic jobs: %d old runs deleted", deleted)
