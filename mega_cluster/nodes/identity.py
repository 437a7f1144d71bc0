"""Which database a node uses, and what the node list says about it.

Two deployments that share one ``APP_NAME`` on one broker (a dev and a staging
stack on one Redis) see each other's nodes and sync messages while their data
lives in different databases: every plugin's in-memory state then follows writes
it cannot read. Each node advertises the id of its database (a random id stored
in that database by the first node to start, :class:`DatabaseIdentity`), so
:func:`database_clash` finds such a mix among the live nodes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import Any

logger = logging.getLogger("mega_cluster.nodes")


def database_identity() -> str:
    """The id of the database mega_cluster writes its tables to ("" if unknown)."""
    from django.db import IntegrityError, router, transaction

    from ..models import DatabaseIdentity

    alias = router.db_for_write(DatabaseIdentity)
    rows = DatabaseIdentity.objects.using(alias)
    try:
        row = rows.filter(pk=1).first()
        if row is None:
            try:
                with transaction.atomic(using=alias):
                    row = rows.create(pk=1, uuid=secrets.token_hex(16))
            except IntegrityError:  # another node wrote it first
                row = rows.get(pk=1)
    except Exception as exc:  # no table yet, no database access (tests): unknown
        logger.warning("cannot read the database identity (%s): run migrate", exc)
        return ""
    return row.uuid[:12]


def database_clash(app_name: str, nodes: Iterable[Mapping[str, Any]]) -> str | None:
    """An error message when live nodes of ``app_name`` use different databases."""
    by_database: dict[str, list[str]] = {}
    for node in nodes:
        if node.get("alive") and node.get("database"):
            by_database.setdefault(node["database"], []).append(node["node_id"])
    if len(by_database) < 2:
        return None
    groups = "; ".join(
        f"database {db}: {', '.join(sorted(ids))}"
        for db, ids in sorted(by_database.items())
    )
    return (
        f"The live nodes of cluster app {app_name!r} use {len(by_database)} "
        f"different databases ({groups}). Two deployments share APP_NAME "
        f"{app_name!r} on one broker, so each receives the other's sync messages "
        "and events: give each deployment its own MEGA_CLUSTER APP_NAME (or its "
        "own Redis/NATS server)."
    )


def unconsumed_message(row: Mapping[str, Any]) -> str | None:
    """A warning for a queue row with pending events and no live consumer."""
    if not row.get("pending") or row.get("consumers"):
        return None
    return (
        f"Channel {row['channel']!r} has {row['pending']} pending event(s) and no "
        "live node consumes it: start 'manage.py runworker' (or set "
        'EVENT_QUEUE["CONSUME"] on a node whose plugins subscribe it).'
    )
