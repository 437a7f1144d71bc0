"""The ``database`` event backend's operations: counts, listings, dead letters
and the retention prune (the ORM and batch statements beside the hot path's SQL
in :mod:`.database`)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from django.db import connections, transaction
from django.db.models import Count, Sum
from django.db.models.expressions import RawSQL

from ...exceptions import EventNotFound
from .base import STAT_KEYS, DeadLetter, EventInfo
from .database_sql import SERVER_EPOCH

if TYPE_CHECKING:
    from .database_sql import Clock

#: Succeeded events deleted per statement by the retention prune.
PRUNE_BATCH = 1000


def _tally():
    from ...models import EventTally

    return EventTally


def _payload(text: str) -> Any:
    """A stored payload, decoded; the text itself when it is not JSON (a row
    written by something else, rejected by the consumer: listings still show it)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def table(model: Any) -> str:
    """``model``'s table name, from its query's (public) ``get_meta()``."""
    return model.objects.none().query.get_meta().db_table


class StoreOperations:
    """Mixed into :class:`~.database.DatabaseEventBackend`: what operators and the
    upkeep ask of the table."""

    app: Any
    alias: str
    vendor: str
    table: str
    #: Whose clock decides (the database server's on PostgreSQL).
    clock: Clock

    def _objects(self) -> Any:
        raise NotImplementedError

    def _execute(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _notify(self, channel: str) -> None:
        raise NotImplementedError

    def stats(self, channel: str | None = None) -> dict[str, dict[str, int]]:
        qs = self._objects()
        if channel is not None:
            qs = qs.filter(channel=channel)
        result: dict[str, dict[str, int]] = {}
        rows = (
            qs.order_by()
            .values_list("channel", "status")
            .annotate(n=Count("id"), failed=Sum("failures"))
        )
        for name, status, count, failed in rows:
            counts = result.setdefault(name, dict.fromkeys(STAT_KEYS, 0))
            counts[status] += count
            counts["failed"] += failed or 0
        tallies = _tally().objects.using(self.alias).filter(app_name=self.app.name)
        if channel is not None:
            tallies = tallies.filter(channel=channel)
        for name, succeeded, failed in tallies.values_list(
            "channel", "succeeded", "failed"
        ):
            counts = result.setdefault(name, dict.fromkeys(STAT_KEYS, 0))
            counts["succeeded"] += succeeded
            counts["failed"] += failed
        return result

    def prune(self, retention: float) -> int:
        """Delete succeeded events finished over ``retention`` seconds ago, in
        batches, adding each batch to the channels' tallies in the same transaction
        (so ``stats()`` counts every event once, before and after). Concurrent
        pruners skip each other's rows on PostgreSQL; on SQLite writers take turns.
        """
        lock = " FOR UPDATE SKIP LOCKED" if self.vendor == "postgresql" else ""
        cutoff_sql, cutoff = self.clock.at(-retention)
        total = 0
        while True:
            with transaction.atomic(using=self.alias):
                gone = self._execute(
                    f"DELETE FROM {self.table} WHERE id IN (SELECT id FROM "
                    f"{self.table} WHERE app_name = %s AND status = 'succeeded' "
                    f"AND finished_at < {cutoff_sql} LIMIT %s{lock}) RETURNING "
                    "channel, failures",
                    [self.app.name, cutoff, PRUNE_BATCH],
                )
                per_channel: dict[str, list[int]] = {}
                for name, failures in gone:
                    counts = per_channel.setdefault(name, [0, 0])
                    counts[0] += 1
                    counts[1] += failures
                for name, (succeeded, failed) in per_channel.items():
                    self.add_tally(name, succeeded, failed)
            total += len(gone)
            if len(gone) < PRUNE_BATCH:
                return total

    def add_tally(self, channel: str, succeeded: int, failed: int) -> None:
        """Add to the channel's tally (creating it: a tally of zeros makes the
        channel known to ``stats()``)."""
        tally = connections[self.alias].ops.quote_name(table(_tally()))
        self._execute(
            f"INSERT INTO {tally} (app_name, channel, succeeded, failed) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (app_name, channel) DO "
            f"UPDATE SET succeeded = {tally}.succeeded + "
            f"EXCLUDED.succeeded, failed = {tally}.failed + EXCLUDED.failed",
            [self.app.name, channel, succeeded, failed],
        )

    def events(
        self, channel: str | None, status: str | None, limit: int
    ) -> list[EventInfo]:
        qs = self._objects()
        if channel is not None:
            qs = qs.filter(channel=channel)
        if status is not None:
            qs = qs.filter(status=status)
        return [
            EventInfo(
                id=row.id,
                channel=row.channel,
                status=row.status,
                payload=_payload(row.payload),
                attempts=row.attempts,
                error=row.last_error,
                available_at=row.available_at,
                finished_at=row.finished_at,
            )
            for row in qs.order_by("-created_at", "-id")[:limit]
        ]

    def oldest_pending(self, channel: str) -> float | None:
        # Its age by the deciding clock, as a time of this node's.
        now_sql, now = self.clock.at()
        rows = self._execute(
            f"SELECT MIN(available_at) - {now_sql} FROM {self.table} WHERE "
            "app_name = %s AND channel = %s AND status = 'pending' AND "
            f"available_at <= {now_sql}",
            [now, self.app.name, channel, now],
        )
        waited = rows[0][0] if rows else None
        return None if waited is None else time.time() + waited

    def dead_letters(self, channel: str | None, limit: int) -> list[DeadLetter]:
        qs = self._objects().filter(status="dead")
        if channel is not None:
            qs = qs.filter(channel=channel)
        return [
            DeadLetter(
                id=row.id,
                channel=row.channel,
                payload=_payload(row.payload),
                attempts=row.attempts,
                error=row.last_error,
                failed_at=row.finished,
            )
            for row in qs.order_by("-finished_at")[:limit]
        ]

    def retry_dead(self, event_id: str) -> None:
        qs = self._objects().filter(id=event_id, status="dead")
        channel = qs.values_list("channel", flat=True).first()
        updated = qs.update(
            status="pending",
            attempts=0,
            available_at=RawSQL(SERVER_EPOCH, ()) if self.clock.server else time.time(),
            finished_at=None,
            claimed_by="",
        )
        if not updated or channel is None:
            raise EventNotFound(f"No dead letter with id {event_id!r}.")
        self._notify(channel)

    def discard_dead(self, event_id: str) -> None:
        deleted, _ = self._objects().filter(id=event_id, status="dead").delete()
        if not deleted:
            raise EventNotFound(f"No dead letter with id {event_id!r}.")
