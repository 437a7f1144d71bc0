"""The outbox tables in SQL: numbers, rows, claims, replays, pruning.

Every function takes the database ``alias`` it works on. Writers run in the
caller's transaction; the relay claims rows with ``SELECT … FOR UPDATE SKIP
LOCKED`` where the database has it (PostgreSQL), so relays on several nodes never
wait for each other's rows. SQLite has no row locks: it serialises writers, and
two relays may both send a row, which receivers drop as a duplicate (its number
is not new).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.models import F


def _models():
    from ..models import OutboxMessage, SyncCursor, SyncSequence

    return OutboxMessage, SyncSequence, SyncCursor


def _table(model: Any, alias: str) -> str:
    return connections[alias].ops.quote_name(
        model.objects.none().query.get_meta().db_table
    )


@dataclass(frozen=True, slots=True)
class Row:
    """An outbox row as the relay and the replays read it."""

    id: int
    kind: str
    channel: str
    seq: int | None
    node: str
    payload: str
    attempts: int


_ROW_FIELDS = ("id", "kind", "channel", "seq", "node", "payload", "attempts")


def next_seq(alias: str, app: str, channel: str) -> int:
    """The channel's next number, taken in the open transaction: the counter row
    stays locked until it ends, so numbers are gapless (a rollback gives the number
    back) and follow the commit order."""
    _, sequence, _ = _models()
    connection = connections[alias]
    if connection.vendor in ("postgresql", "sqlite"):
        table = _table(sequence, alias)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} (app_name, channel, last) VALUES (%s, %s, 1) "
                f"ON CONFLICT (app_name, channel) DO UPDATE SET last = {table}.last + 1 "
                "RETURNING last",
                [app, channel],
            )
            return int(cursor.fetchone()[0])
    rows = sequence.objects.using(alias).select_for_update()
    counter = rows.filter(app_name=app, channel=channel).first()
    if counter is None:
        counter = sequence.objects.using(alias).create(
            app_name=app, channel=channel, last=0
        )
    counter.last += 1
    counter.save(using=alias, update_fields=["last"])
    return int(counter.last)


def insert_sync(
    alias: str, app: str, channel: str, node: str, payload: str
) -> tuple[int, int]:
    """Number and write one sync message in the open transaction: ``(id, seq)``;
    one statement on PostgreSQL (the counter's upsert feeds the row's insert)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        seq = next_seq(alias, app, channel)
        row_id = insert(
            alias,
            app=app,
            kind="sync",
            channel=channel,
            seq=seq,
            node=node,
            payload=payload,
        )
        return row_id, seq
    model, sequence, _ = _models()
    counters, rows = _table(sequence, alias), _table(model, alias)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH s AS (INSERT INTO {counters} (app_name, channel, last) VALUES "
            f"(%s, %s, 1) ON CONFLICT (app_name, channel) DO UPDATE SET last = "
            f"{counters}.last + 1 RETURNING last) INSERT INTO {rows} (app_name, kind, "
            "channel, seq, node, payload, created_at, attempts) SELECT %s, 'sync', "
            "%s, s.last, %s, %s, %s, 0 FROM s RETURNING id, seq",
            [app, channel, app, channel, node, payload, time.time()],
        )
        row_id, seq = cursor.fetchone()
    return int(row_id), int(seq)


def insert(
    alias: str,
    *,
    app: str,
    kind: str,
    channel: str,
    seq: int | None,
    node: str,
    payload: str,
) -> int:
    """Write one row (in the open transaction); its id."""
    model, _, _ = _models()
    row = model.objects.using(alias).create(
        app_name=app,
        kind=kind,
        channel=channel,
        seq=seq,
        node=node,
        payload=payload,
        created_at=time.time(),
    )
    return int(row.pk)


def mark_sent(alias: str, ids: Iterable[int]) -> None:
    model, _, _ = _models()
    ids = list(ids)
    for start in range(0, len(ids), 500):
        model.objects.using(alias).filter(pk__in=ids[start : start + 500]).update(
            sent_at=time.time()
        )


def has_unsent(alias: str, app: str, older_than: float) -> bool:
    """Whether a relay has work (a plain read: no lock, no write transaction)."""
    model, _, _ = _models()
    return (
        model.objects.using(alias)
        .filter(app_name=app, sent_at__isnull=True, created_at__lt=older_than)
        .exists()
    )


def claim_unsent(alias: str, app: str, older_than: float, limit: int) -> list[Row]:
    """Unsent rows written before ``older_than`` (Unix time), by channel and
    number; call inside ``atomic()``: on PostgreSQL the rows stay locked (and other
    relays skip them) until the block ends."""
    model, _, _ = _models()
    rows = (
        model.objects.using(alias)
        .select_for_update(skip_locked=True)
        .filter(app_name=app, sent_at__isnull=True, created_at__lt=older_than)
        .order_by("channel", "seq", "id")
        .values_list(*_ROW_FIELDS)[:limit]
    )
    return [Row(*row) for row in rows]


def failed(alias: str, row_id: int) -> None:
    """Count a failed send of the row (shown by the admin)."""
    model, _, _ = _models()
    model.objects.using(alias).filter(pk=row_id).update(attempts=F("attempts") + 1)


def sync_range(alias: str, app: str, channel: str, after: int, upto: int) -> list[Row]:
    """The sync messages ``after < seq <= upto`` of a channel, in order."""
    model, _, _ = _models()
    rows = (
        model.objects.using(alias)
        .filter(
            app_name=app,
            kind=model.SYNC,
            channel=channel,
            seq__gt=after,
            seq__lte=upto,
        )
        .order_by("seq")
        .values_list(*_ROW_FIELDS)
    )
    return [Row(*row) for row in rows]


def high_water(alias: str, app: str, channels: Iterable[str]) -> dict[str, int]:
    """The last number given out per channel (channels never used: absent)."""
    _, sequence, _ = _models()
    channels = list(channels)
    if not channels:
        return {}
    rows = sequence.objects.using(alias).filter(app_name=app, channel__in=channels)
    return dict(rows.values_list("channel", "last"))


def prune(alias: str, app: str, retention: float) -> int:
    """Delete sent rows older than ``retention`` seconds; how many."""
    model, _, _ = _models()
    cutoff = time.time() - retention
    old = model.objects.using(alias).filter(
        app_name=app, sent_at__isnull=False, created_at__lt=cutoff
    )
    if not old.exists():  # no write (SQLite: no write lock) when nothing is due
        return 0
    deleted, _ = old.delete()
    return deleted


def load_cursors(alias: str, app: str, receiver: str) -> dict[str, int]:
    _, _, cursor = _models()
    rows = cursor.objects.using(alias).filter(app_name=app, receiver=receiver)
    return dict(rows.values_list("channel", "last"))


def save_cursors(alias: str, app: str, receiver: str, lasts: dict[str, int]) -> None:
    _, _, cursor = _models()
    with transaction.atomic(using=alias):
        for channel, last in lasts.items():
            cursor.objects.using(alias).update_or_create(
                app_name=app,
                receiver=receiver,
                channel=channel,
                defaults={"last": last},
            )


@dataclass(frozen=True, kw_only=True)
class Backlog:
    """What the outbox of one app holds unsent on one database."""

    unsent: int
    oldest_created_at: float | None


def backlog(alias: str, app: str) -> Backlog:
    from django.db.models import Count, Min

    model, _, _ = _models()
    result = (
        model.objects.using(alias)
        .filter(app_name=app, sent_at__isnull=True)
        .aggregate(n=Count("id"), oldest=Min("created_at"))
    )
    return Backlog(unsent=result["n"] or 0, oldest_created_at=result["oldest"])
