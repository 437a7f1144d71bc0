"""System check of the caches plugins declare (``Plugin.caches``), id ``W004``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Warning

from .. import conf
from ..exceptions import PluginError
from .stores import NON_SHARED_BACKENDS


def declared_plugins() -> list[tuple[str, type]]:
    """``(app label, Plugin class)`` of the installed plugins (none if broken:
    the registry reports those errors)."""
    from ..plugins.loader import discover

    try:
        return [(cfg.label, cls) for cfg, cls in discover()]
    except PluginError:
        return []


def check_shared_caches(
    app: conf.AppSettings,
    debug: bool,
    plugins: Iterable[tuple[str, type]] | None = None,
) -> list[CheckMessage]:
    """W004: under ``DEBUG=False``, a cache a plugin declares ``shared`` lives in a
    store each process keeps to itself (locmem, dummy)."""
    if debug:
        return []
    caches: dict[str, Any] = getattr(settings, "CACHES", {}) or {}
    messages: list[CheckMessage] = []
    for label, cls in declared_plugins() if plugins is None else plugins:
        if app.plugins is not None and label not in app.plugins:
            continue
        name = getattr(cls, "name", "") or label
        for cache_name, options in (getattr(cls, "caches", None) or {}).items():
            if not options.get("shared"):
                continue
            alias = options.get("store") or app.cache["DEFAULT_STORE"]
            backend = (caches.get(alias) or {}).get("BACKEND")
            if backend not in NON_SHARED_BACKENDS:
                continue
            messages.append(
                Warning(
                    f"Plugin {name!r} of cluster app {app.name!r} declares its cache "
                    f"{cache_name!r} shared, but it lives in CACHES[{alias!r}] "
                    f"({backend}), which each process keeps to itself: the other "
                    "nodes never see its entries or resets.",
                    hint=f'Give it a shared store: caches = {{"{cache_name}": '
                    '{"store": "<a Redis CACHES alias>", "shared": True}}, or point '
                    'MEGA_CLUSTER CACHE["DEFAULT_STORE"] at a shared store.',
                    obj=cls,
                    id="mega_cluster.W004",
                )
            )
    return messages
