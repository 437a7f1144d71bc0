"""Starting and stopping the plugins of a cluster app, on this node.

``start_plugins``: the sync channels, then ``before_load()`` and ``load()`` of every
enabled plugin in dependency order, then install-once for the never-installed
ones. ``stop_plugins``: ``before_stop()`` in reverse order. Hooks:
:mod:`.hooks`; install once: :mod:`.install`; enable/disable: :mod:`.enabling`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .enabling import subscribe_enabled
from .hooks import call_hook
from .install import install_once
from .states import load_states
from .sync import subscribe_plugins

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.plugins")

#: ``hook(app)`` callables run at the end of :func:`start_plugins` (before the
#: managers start): ``mega_cluster.tasks`` builds the event queue there when a
#: task backend runs on the app, so its task queues are consumed.
start_hooks: list[Callable[[ClusterApp], None]] = []


def start_plugins(app: ClusterApp) -> None:
    """before_load, load (enabled plugins) then install (never-installed ones)."""
    states = load_states(app)
    enabled = [p for p in app.plugins.values() if states[p.name].enabled]
    for plugin in app.plugins.values():
        plugin.enabled = states[plugin.name].enabled
    if app.plugins:  # sync messages, gaps, enable/disable from other nodes
        subscribe_plugins(app)
        subscribe_enabled(app)
    for plugin in enabled:
        call_hook(plugin, "before_load")
    for plugin in enabled:
        call_hook(plugin, "load")
        plugin.loaded = True
    for plugin in enabled:
        if not states[plugin.name].installed:
            install_once(plugin)
    for hook in list(start_hooks):
        hook(app)


def stop_plugins(app: ClusterApp) -> None:
    for plugin in reversed(list(app.plugins.values())):
        if plugin.loaded:
            try:
                call_hook(plugin, "before_stop")
            except Exception:
                logger.exception("plugin %s before_stop() failed", plugin.name)
            plugin.loaded = False
