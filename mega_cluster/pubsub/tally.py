"""Counting published messages into the ``messages_published`` metric in batches."""

from __future__ import annotations

import asyncio
import threading
import time

from .. import metrics
from . import runtime

#: Seconds published-message counts may wait before reaching the metric.
PUBLISHED_FLUSH = 1.0


class PublishedTally:
    """Published-message counts per channel, added to the metric ``PUBLISHED_FLUSH``
    seconds after the first one (and on :meth:`flush`)."""

    def __init__(self, app_name: str) -> None:
        self.app_name = app_name
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._since = 0.0

    def count(self, channel: str, loop: asyncio.AbstractEventLoop | None) -> None:
        """One message published on ``channel``; ``loop`` runs the flush timer."""
        # A labelled prometheus inc() per message cost as much as building it: count
        # here and add to the metric PUBLISHED_FLUSH s later (and on stop).
        now = time.monotonic()
        with self._lock:
            counts = self._counts
            first = not counts
            counts[channel] = counts.get(channel, 0) + 1
            if first:
                self._since = now
            elif now - self._since < 2 * PUBLISHED_FLUSH:
                return
        if first and loop is not None:
            try:
                if runtime.in_loop_thread(loop):
                    loop.call_later(PUBLISHED_FLUSH, self.flush)
                else:
                    loop.call_soon_threadsafe(
                        loop.call_later, PUBLISHED_FLUSH, self.flush
                    )
                return
            except RuntimeError:  # the loop is closed
                pass
        # no loop, or its timer never ran (loop stopped without stop())
        self.flush()

    def flush(self) -> None:
        """Add the counts so far to the metric."""
        with self._lock:
            counts, self._counts = self._counts, {}
        for channel, amount in counts.items():
            metrics.inc(
                "messages_published", amount, app=self.app_name, channel=channel
            )
