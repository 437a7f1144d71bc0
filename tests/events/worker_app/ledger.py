"""An idempotent handler for the inbox cluster tests (``$MC_INBOX_TABLE`` set):
consumes ``ledger`` and adds 1 to the payload's row of that table, an effect that
a second run would repeat.

``$MC_INBOX_HOLD`` seconds are spent inside the transaction and
``$MC_INBOX_HOLD_AFTER`` after its commit (before the ack), so a random ``kill -9``
lands in either window. An event
whose payload has ``"die": true`` kills its own worker right after its first
attempt committed.
"""

from __future__ import annotations

import os
import signal
import time

from django.db import connection, transaction

from mega_cluster import idempotent


def _hold(name: str = "MC_INBOX_HOLD") -> None:
    time.sleep(float(os.environ.get(name, "0")))


def _hold_after() -> None:
    _hold("MC_INBOX_HOLD_AFTER")


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
    transaction.on_commit(_hold_after)  # committed, not acked yet
    if payload.get("die") and ctx.attempt == 1:
        transaction.on_commit(_die)
