"""W008: LISTEN would go through a transaction pooler (ids in docs/checks.md)."""

from __future__ import annotations

from django.core.checks import CheckMessage, Warning

from .. import conf
from ..pooling import through_pooler


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
        if not through_pooler(listen):
            continue
        fix = (
            'Set MEGA_CLUSTER["LOCKS"]["OPTIONS"]["LISTEN_DATABASE"] to an alias '
            "that connects to PostgreSQL directly; without it waiters poll every "
            "POLL_INTERVAL."
            if name == "LOCKS"
            else 'Set MEGA_CLUSTER["EVENT_QUEUE"]["OPTIONS"]["LISTEN_DATABASE"] to '
            "an alias that connects to PostgreSQL directly; without it consumers "
            "of other processes find new events every POLL_INTERVAL."
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
