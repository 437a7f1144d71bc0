"""The inbox's SQL: record a message id in the caller's transaction (or find it
there already), count a skipped duplicate, prune old rows, read the counts."""

from __future__ import annotations

from django.db import IntegrityError, connections, transaction
from django.db.models import Count, F

#: Rows deleted per statement by :func:`prune`.
PRUNE_BATCH = 1000

#: ``InboxEntry``'s table (models load after the app registry: imported in calls).
TABLE = "mega_cluster_inbox"


def record(alias: str, app: str, consumer: str, message_id: str, now: float) -> bool:
    """Insert the inbox row inside the caller's open transaction on ``alias``; False
    when it is there already (the effect of this message committed before).

    On PostgreSQL a row another transaction inserted and has not committed yet
    makes this wait for that transaction: its commit means "already done", its
    rollback lets this insert go through.
    """
    connection = connections[alias]
    vendor = connection.vendor
    params: list[str | float] = [app, consumer, message_id, now]
    head = f"INTO {connection.ops.quote_name(TABLE)} (app_name, consumer, message_id, created_at) VALUES (%s, %s, %s, %s)"
    if vendor in ("postgresql", "sqlite"):
        sql = f"INSERT {head} ON CONFLICT DO NOTHING"
    elif vendor == "mysql":
        sql = f"INSERT IGNORE {head}"
    else:  # any other database: a savepoint catches the unique violation
        try:
            with transaction.atomic(using=alias), connection.cursor() as cursor:
                cursor.execute(f"INSERT {head}", params)
        except IntegrityError:
            return False
        return True
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount == 1


def recorded(alias: str, app: str, consumer: str, message_id: str) -> bool:
    """Whether the effect of ``message_id`` committed for ``consumer``."""
    from ..models import InboxEntry

    return (
        InboxEntry.objects.using(alias)
        .filter(app_name=app, consumer=consumer, message_id=message_id)
        .exists()
    )


def count_skip(alias: str, app: str, consumer: str) -> None:
    """Add one skipped duplicate to the consumer's tally (in the caller's
    transaction)."""
    from ..models import InboxTally

    tallies = InboxTally.objects.using(alias)
    if tallies.filter(app_name=app, consumer=consumer).update(skipped=F("skipped") + 1):
        return
    try:
        with transaction.atomic(using=alias):
            tallies.create(app_name=app, consumer=consumer, skipped=1)
    except IntegrityError:  # another process created it meanwhile
        tallies.filter(app_name=app, consumer=consumer).update(skipped=F("skipped") + 1)


def prune(alias: str, app: str, before: float, batches: int) -> int:
    """Delete up to ``batches * PRUNE_BATCH`` of the app's rows recorded
    before ``before`` (Unix time); the number deleted."""
    from ..models import InboxEntry

    entries = InboxEntry.objects.using(alias).filter(
        app_name=app, created_at__lt=before
    )
    deleted = 0
    for _ in range(batches):
        ids = list(entries.values_list("pk", flat=True)[:PRUNE_BATCH])
        if not ids:
            break
        deleted += InboxEntry.objects.using(alias).filter(pk__in=ids).delete()[0]
        if len(ids) < PRUNE_BATCH:
            break
    return deleted


def stats(alias: str, app: str) -> dict[str, dict[str, int]]:
    """``{consumer: {"recorded": rows kept, "skipped": duplicates skipped}}``."""
    from ..models import InboxEntry, InboxTally

    result: dict[str, dict[str, int]] = {}
    rows = (
        InboxEntry.objects.using(alias)
        .filter(app_name=app)
        .values("consumer")
        .annotate(n=Count("pk"))
        .order_by()
    )
    for row in rows:
        result[row["consumer"]] = {"recorded": row["n"], "skipped": 0}
    tallies = InboxTally.objects.using(alias).filter(app_name=app)
    for consumer, skipped in tallies.values_list("consumer", "skipped"):
        result.setdefault(consumer, {"recorded": 0, "skipped": 0})["skipped"] = skipped
    return dict(sorted(result.items()))
