"""An idempotent handler for the inbox cluster tests (``$MC_INBOX_TABLE`` set):
consumes ``ledger`` and adds 1 to the payload's row of that table, an effect that
a second run would repeat.

``$MC_INBOX_HOLD`` seconds are spent inside the transaction and again after its
commit (before the ack), so a random ``kill -9`` lands in either window. An event
whose payload has ``"die": true`` kills its own worker right after its first
attempt committed.
"""

from __future__ import annotations

import os
import signal
import time

from django.db import connection, transaction

from mega_cluster import idempotent


def _hold() -> None:
    time.sleep(float(os.environ.get("MC_INBOX_HOLD", "0")))


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@idempotent
def ledger(payload, ctx) -> None:
    table = os.environ["MC_INBOX_TABLE"]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (k, n) VALUES (%s, 1) "
            f"ON CONFLICT (k) DO UPDATE SET n = {table}.n + 1",
            [str(payload["k"])],
        )
    _hold()
    transaction.on_commit(_hold)  # committed, not acked yet
    if payload.get("die") and ctx.attempt == 1:
        transaction.on_commit(_die)
