"""The ``database`` event backend's claim statements, and whose clock they read.

Every moment a claim, a lease, a redelivery or the retention compares is taken in
the statement that decides, from the database server's clock on PostgreSQL
(``STATEMENT_TIMESTAMP()`` as a Unix timestamp): a node whose clock is off can
neither take an event whose lease is live nor keep one that lapsed, and its leases
end when the database says so. A time a node computed (a publish's delay, a
retry's backoff) is written as the same distance from the server's now. SQLite
runs on the machine of every node that uses it: there, that machine's clock.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

COLUMNS = "id, channel, payload, attempts, max_retries, timeout"

#: The database server's now as a Unix timestamp (PostgreSQL).
SERVER_EPOCH = "EXTRACT(EPOCH FROM STATEMENT_TIMESTAMP())::float8"


class ClaimHook(Protocol):
    """A write made in the statement that claims a channel's events (PostgreSQL):
    ``mega_cluster.tasks`` starts the claimed tasks' result rows there, so an
    attempt's start costs no statement of its own."""

    def sql(self, claimed: str) -> tuple[str, list[Any]]:
        """A data-modifying statement over ``claimed``, the claimed events (columns
        ``COLUMNS`` and ``lost``; ``attempts`` is the attempt's number), whose
        ``RETURNING`` starts with ``id`` (an event's id), and its parameters."""
        ...

    def claimed(self, rows: list[tuple[str, int, tuple[Any, ...] | None]]) -> None:
        """After the claim: ``(event id, attempt, the row the statement returned
        for it or None)`` for each claimed event."""
        ...


class Clock:
    """Moments for a statement on one database: SQL with exactly one ``%s`` and
    its parameter, so a statement's parameters line up whichever clock decides."""

    def __init__(self, vendor: str) -> None:
        #: True: the database server's clock (PostgreSQL).
        self.server = vendor == "postgresql"

    def at(self, seconds: float = 0.0) -> tuple[str, float]:
        """``seconds`` from now (negative: ago) by the deciding clock."""
        if self.server:
            return f"({SERVER_EPOCH} + %s)", seconds
        return "%s", time.time() + seconds

    def local(self, when: float) -> tuple[str, float]:
        """``when``, a Unix time of this node's clock, as the same distance from
        now by the deciding clock."""
        return self.at(when - time.time())


class ClaimStatements:
    """The claim and next-due statements (mixed into the backend, which sets
    ``table``, ``vendor``, ``clock`` and ``app``)."""

    table: str
    vendor: str
    clock: Clock
    app: Any

    def takeable_sql(self, lock: str = "", now: str = "%s") -> str:
        """``id, available_at, lost`` of the channel's events a worker may take at a given
        moment: pending and due by then, or running with a lease that lapsed by
        then. Parameters: app name, channel, moment, limit, twice; ``now`` is the
        moment's SQL (one ``%s``, see :class:`Clock`).

        Each kind is one range of the claim index (``app_name, channel, status,
        available_at``). Asked as one ``OR``, the database would read every row of
        the channel, finished ones included, so claiming would slow down with the
        history the table keeps."""
        where = f"FROM {self.table} WHERE app_name = %s AND channel = %s AND "
        return (
            f"SELECT * FROM (SELECT id, available_at, 0 AS lost {where}"
            f"status = 'pending' AND available_at <= {now} ORDER BY available_at "
            f"LIMIT %s{lock}) AS due UNION ALL SELECT * FROM (SELECT id, "
            f"available_at, 1 AS lost {where}status = 'running' AND "
            f"lease_expires_at < {now} ORDER BY available_at LIMIT %s{lock}) AS lapsed"
        )

    def claim_statements(
        self, channel: str, limit: int, *, lease: float
    ) -> list[tuple[str, list[Any]]]:
        """The claim's SQL and parameters (see :meth:`takeable_sql`): rows of
        ``COLUMNS`` (read by ``base.claimed_event``) and whether the event's previous attempt was lost (its lease
        lapsed). One statement on PostgreSQL; elsewhere (no ``UPDATE … FROM``
        column in ``RETURNING``) the lapsed ones, then the due ones."""
        now_sql, now = self.clock.at()
        until_sql, until = self.clock.at(lease)
        claim = (
            f"UPDATE {self.table} SET status = 'running', attempts = attempts + 1, "
            f"dedupe_key = NULL, lease_expires_at = {until_sql}, claimed_by = %s "
        )
        claiming = [until, self.app.node_id]
        matching = [self.app.name, channel, now, limit]
        if self.vendor == "postgresql":
            lock = " FOR UPDATE SKIP LOCKED"
            return [
                (
                    f"{claim}FROM (SELECT id, lost FROM "
                    f"({self.takeable_sql(lock, now_sql)}) "
                    f"AS claimable ORDER BY available_at LIMIT %s) AS c WHERE "
                    f"{self.table}.id = c.id RETURNING "
                    + ", ".join(f"{self.table}.{c}" for c in COLUMNS.split(", "))
                    + ", c.lost",
                    [*claiming, *matching, *matching, limit],
                )
            ]
        where = "WHERE app_name = %s AND channel = %s AND status = %s AND "
        return [
            (
                f"{claim}WHERE id IN (SELECT id FROM {self.table} {where}{due} "
                f"{now_sql} ORDER BY available_at LIMIT %s) RETURNING {COLUMNS}, "
                f"{lost}",
                [*claiming, self.app.name, channel, status, now, limit],
            )
            for status, due, lost in (
                ("running", "lease_expires_at <", 1),
                ("pending", "available_at <=", 0),
            )
        ]

    def hooked_claim_statement(
        self, channel: str, limit: int, *, lease: float, hook: ClaimHook
    ) -> tuple[str, list[Any]]:
        """The claim with ``hook``'s write in the same statement (PostgreSQL): rows
        of the claim's columns, then the hook's (NULLs where it returned none)."""
        ((claim, params),) = self.claim_statements(channel, limit, lease=lease)
        hooked, hook_params = hook.sql("claimed")
        return (
            f"WITH claimed AS ({claim}), hooked AS ({hooked}) SELECT claimed.*, "
            "hooked.* FROM claimed LEFT JOIN hooked ON hooked.id = claimed.id",
            [*params, *hook_params],
        )

    def claim_statement(
        self, channel: str, limit: int, *, lease: float
    ) -> tuple[str, list[Any]]:
        """The claim's first statement (see :meth:`claim_statements`)."""
        return self.claim_statements(channel, limit, lease=lease)[0]

    def next_due_statement(self, channel: str) -> tuple[str, list[Any]]:
        """In how many seconds a pending event is due or a running one's lease
        lapses (by the deciding clock): two index ranges (see
        :meth:`takeable_sql`), not one scan of the channel's history."""
        now_sql, now = self.clock.at()
        where = f"FROM {self.table} WHERE app_name = %s AND channel = %s AND "
        return (
            f"SELECT (SELECT MIN(available_at) {where}status = 'pending') - "
            f"{now_sql}, (SELECT MIN(lease_expires_at) {where}status = 'running') "
            f"- {now_sql}",
            [self.app.name, channel, now, self.app.name, channel, now],
        )
