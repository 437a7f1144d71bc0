"""Which ``DATABASES`` aliases go through a transaction pooler (PgBouncer in
``pool_mode = transaction``): there a session's state does not outlive its
transaction, so ``LISTEN`` hears nothing (docs/deployment.md, PgBouncer)."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def through_pooler(alias: str) -> bool:
    """Whether ``DATABASES[alias]`` is marked as going through a transaction
    pooler: PostgreSQL with ``DISABLE_SERVER_SIDE_CURSORS`` (the setting Django
    documents for PgBouncer in transaction mode)."""
    entry: dict[str, Any] = settings.DATABASES.get(alias, {})
    return "postgresql" in str(entry.get("ENGINE", "")) and bool(
        entry.get("DISABLE_SERVER_SIDE_CURSORS")
    )
