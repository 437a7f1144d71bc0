"""One snapshot of a cluster app for ``cluster_status`` and the admin pages.

Everything comes from the managers' operations API (``node_registry.list_nodes()``,
``lock_manager.list_locks()``, ``event_queue.stats()``), so the terminal, the admin
and the code never disagree. A source that cannot be read is reported under
``errors`` instead of failing the whole snapshot.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from .identity import database_clash, unconsumed_message

if TYPE_CHECKING:
    from ..registry import ClusterApp

QUEUE_STATES = ("pending", "running", "succeeded", "failed", "dead")


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def lock_rows(app: ClusterApp) -> list[dict[str, Any]]:
    """Held locks with ``age`` and ``ttl_left`` in seconds (times as ISO 8601)."""
    now = timezone.now()
    return [
        {
            "key": info.key,
            "holder": info.holder,
            "fence": info.fence,
            "acquired_at": _iso(info.acquired_at),
            "expires_at": _iso(info.expires_at),
            "age": round(max(0.0, (now - info.acquired_at).total_seconds()), 3),
            "ttl_left": round(max(0.0, (info.expires_at - now).total_seconds()), 3),
            "waiters": info.waiters,
        }
        for info in app.lock_manager.list_locks()
    ]


def queue_rows(
    app: ClusterApp, nodes: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Per channel: the five counters, ``oldest_pending_age`` (seconds, or None when
    the backend cannot tell), ``consumers`` (slots on live nodes) and, when
    ``nodes`` is given, ``unconsumed``: the warning for pending events that no
    live node consumes (else None)."""
    stats = app.event_queue.stats()
    consumers: dict[str, int] = {}
    for node in nodes or []:
        if node["alive"]:
            for channel, slots in node["consumers"].items():
                consumers[channel] = consumers.get(channel, 0) + int(slots)
    oldest = app.event_queue.backend.oldest_pending
    rows = []
    for channel in sorted(set(stats) | set(consumers)):
        counts = stats.get(channel, dict.fromkeys(QUEUE_STATES, 0))
        age = None
        if counts.get("pending"):
            since = oldest(channel)
            age = round(max(0.0, time.time() - since), 3) if since else None
        rows.append(
            {
                "channel": channel,
                **{state: int(counts.get(state, 0)) for state in QUEUE_STATES},
                "oldest_pending_age": age,
                "consumers": consumers.get(channel, 0),
            }
        )
        rows[-1]["unconsumed"] = (
            unconsumed_message(rows[-1]) if nodes is not None else None
        )
    return rows


def snapshot(app: ClusterApp) -> dict[str, Any]:
    """``{"app", "node_id", "nodes", "locks", "queues", "errors", "clash",
    "warnings"}`` for ``app``."""
    errors: dict[str, str] = {}
    nodes: list[dict[str, Any]] = []
    locks: list[dict[str, Any]] = []
    queues: list[dict[str, Any]] = []
    try:
        nodes = [n.as_dict() for n in app.node_registry.list_nodes()]
    except Exception as exc:
        errors["nodes"] = f"{type(exc).__name__}: {exc}"
    try:
        locks = lock_rows(app)
    except Exception as exc:
        errors["locks"] = f"{type(exc).__name__}: {exc}"
    try:
        queues = queue_rows(app, nodes)
    except Exception as exc:
        errors["queues"] = f"{type(exc).__name__}: {exc}"
    known = "nodes" not in errors
    return {
        "app": app.name,
        "node_id": app.node_id,
        "nodes": nodes,
        "locks": locks,
        "queues": queues,
        "errors": errors,
        # two deployments on one APP_NAME and broker (nodes.identity)
        "clash": database_clash(app.name, nodes) if known else None,
        "warnings": [r["unconsumed"] for r in queues if known and r["unconsumed"]],
    }
