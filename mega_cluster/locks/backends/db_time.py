"""Whose clock decides a database lease: the database server's on PostgreSQL.

Lease ends, waiter places and lapses are compared with ``STATEMENT_TIMESTAMP()``
(Django's ``Now()``) inside the statement that decides, so a node whose clock is
off can neither take a lease that is still live nor keep one that lapsed. SQLite
runs on the machine of every node that uses it: its decisions use that machine's
clock (``timezone.now()``), which is the same clock for all of them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connections
from django.db.models import DateTimeField, DurationField, ExpressionWrapper, Value
from django.db.models.functions import Now
from django.utils import timezone


def server_clock(alias: str) -> bool:
    """Whether statements on ``alias`` read the database server's clock."""
    return connections[alias].vendor == "postgresql"


def now(alias: str) -> Any:
    """The current time for a statement on ``alias`` (an SQL expression there)."""
    return Now() if server_clock(alias) else timezone.now()


def later(when: Any, seconds: float) -> Any:
    """``when`` plus ``seconds``, as an expression when ``when`` is one."""
    delta = dt.timedelta(seconds=seconds)
    if isinstance(when, dt.datetime):
        return when + delta
    return ExpressionWrapper(
        when + Value(delta, output_field=DurationField()),
        output_field=DateTimeField(),
    )
