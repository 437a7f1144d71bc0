"""W008: LISTEN would go through a transaction pooler (ids in docs/checks.md)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning

from .. import conf


def _pooled(alias: str) -> bool:
    """Whether ``DATABASES[alias]`` is marked as going through a transaction
    pooler: PostgreSQL with ``DISABLE_SERVER_SIDE_CURSORS`` (the setting Django
    documents for PgBouncer in transaction mode)."""
    entry: dict[str, Any] = settings.DATABASES.get(alias, {})
    return "postgresql" in str(entry.get("ENGINE", "")) and bool(
        entry.get("DISABLE_SERVER_SIDE_CURSORS")
    )


def check_listen_through_pooler(app: conf.AppSettings) -> list[CheckMessage]:
    """W008: a database lock backend or event queue whose ``LISTEN`` connection
    would go through a transaction pooler, where notifications are lost."""
    messages: list[CheckMessage] = []
    for name in ("LOCKS", "EVENT_QUEUE"):
        section = app.sections.get(name)
        backend = None if section is None else section.backend
        if backend is None or backend.alias != "database":
            continue
        alias = backend.options.get("DATABASE", "default")
        listen = backend.options.get("LISTEN_DATABASE", alias)
        if not _pooled(listen):
            continue
        fix = (
            'Set MEGA_CLUSTER["LOCKS"]["OPTIONS"]["LISTEN_DATABASE"] to an alias '
            "that connects to PostgreSQL directly; without it waiters poll every "
            "POLL_INTERVAL."
            if name == "LOCKS"
            else "The event queue has no direct LISTEN setting yet: consumers wake "
            "every POLL_INTERVAL; point OPTIONS['DATABASE'] at a direct alias for "
            "at-once wake-ups."
        )
        messages.append(
            Warning(
                f"MEGA_CLUSTER app {app.name!r} {name}: LISTEN would use DATABASES"
                f"[{listen!r}], which goes through a transaction pooler "
                "(DISABLE_SERVER_SIDE_CURSORS): its notifications are lost there.",
                hint=fix,
                id="mega_cluster.W008",
            )
        )
    return messages
