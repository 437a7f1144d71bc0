"""The database server's time as a Unix timestamp, without a query per read.

Leases and due times of the ``database`` event queue are compared across nodes;
read from each node's own clock, a node 30 s ahead would take the running
events of the others as lapsed (and run them twice). On PostgreSQL
:class:`ServerClock` reads the server's clock once per :attr:`REFRESH` seconds
and adds the measured offset to this node's clock in between (a node clock
that jumps is re-measured at the next refresh); elsewhere (SQLite, on the
machine of all its nodes) it is this node's clock.
"""

from __future__ import annotations

import time

from django.db import DatabaseError, connections


class ServerClock:
    #: Seconds between two measures of the offset.
    REFRESH = 30.0

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.offset = 0.0
        self._measured_at: float | None = None

    def __call__(self) -> float:
        """Now, by the database server's clock (seconds since the epoch)."""
        at = time.monotonic()
        if self._measured_at is None or at - self._measured_at > self.REFRESH:
            self._measure(at)
        return time.time() + self.offset

    def from_local(self, when: float) -> float:
        """``when``, read on this node's clock (``time.time()`` based), on the
        server's: the queue stamps due times (a delay, a retry's backoff) locally."""
        return when + (self() - time.time())

    def _measure(self, at: float) -> None:
        connection = connections[self.alias]
        self._measured_at = at
        if connection.vendor != "postgresql":
            return
        try:
            with connection.cursor() as cursor:
                before = time.time()
                cursor.execute("SELECT EXTRACT(EPOCH FROM CLOCK_TIMESTAMP())")
                server = float(cursor.fetchone()[0])
                after = time.time()
        except DatabaseError:
            self._measured_at = None  # the statement that follows reports it
            return
        self.offset = server - (before + after) / 2
