"""Plugins on sync messages: their own channel, gap hook, enable/disable everywhere.

Called from :mod:`mega_cluster.plugins.lifecycle`: :func:`subscribe_plugins` when
the app starts, :func:`broadcast_enabled` when a plugin is enabled or disabled.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plugins.base import Plugin
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.plugins")

#: Internal sync channel of enable/disable ("~" keeps it apart from user names).
ENABLED_CHANNEL = "~plugins"


def subscribe_plugins(app: ClusterApp) -> None:
    """Route each plugin's sync channel to ``handle_sync_message`` and gaps to
    ``handle_sync_gap()``; apply enable/disable sent by other nodes."""
    if not app.plugins:
        return
    manager = app.sync_message_manager
    for plugin in app.plugins.values():
        manager._subscribe(
            plugin.sync_channel,
            _PluginHook(plugin, "handle_sync_message"),
            _PluginHook(plugin, "handle_sync_gap"),
        )
    manager._subscribe(
        ENABLED_CHANNEL, partial(_apply_enabled, app), partial(_reload_enabled, app)
    )


def broadcast_enabled(app: ClusterApp, name: str, enabled: bool) -> None:
    """Tell the other nodes to apply ``enabled`` to plugin ``name`` (after commit)."""
    app.sync_message_manager._publish(
        ENABLED_CHANNEL, {"plugin": name, "enabled": enabled}, None
    )


class _PluginHook:
    """``plugin.<hook>(*args)`` while the plugin is enabled. Its repr is what a
    failure is logged with: ``FlagsPlugin.handle_sync_message`` (plugin 'flags'),
    the method the reader wrote, not this wrapper."""

    __slots__ = ("hook", "plugin")

    def __init__(self, plugin: Plugin, hook: str) -> None:
        self.plugin = plugin
        self.hook = hook

    def __call__(self, *args: Any) -> None:
        from ..plugins.lifecycle import call_hook

        if self.plugin.enabled:
            call_hook(self.plugin, self.hook, *args)

    def __repr__(self) -> str:
        return (
            f"{type(self.plugin).__qualname__}.{self.hook} "
            f"(plugin {self.plugin.name!r})"
        )


def _apply_enabled(app: ClusterApp, message: Any) -> None:
    from ..plugins.lifecycle import apply_enabled

    apply_enabled(app, message["plugin"], bool(message["enabled"]))


def _reload_enabled(app: ClusterApp) -> None:
    """After a gap the database is the truth: apply every plugin's stored flag."""
    from ..models import PluginState
    from ..plugins.lifecycle import apply_enabled

    states = PluginState.objects.filter(app_name=app.name, name__in=list(app.plugins))
    for state in states:
        plugin = app.plugins[state.name]
        if plugin.enabled != state.enabled:
            logger.info(
                "plugin %s is %s in the database; applying it on node %s",
                state.name,
                "enabled" if state.enabled else "disabled",
                app.node_id,
            )
            apply_enabled(app, state.name, state.enabled)
