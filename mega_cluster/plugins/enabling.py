"""Enabling and disabling a plugin at run time, on every node.

The flag is stored on the plugin's row; the node that changes it applies it and
sends a sync message on the internal channel ``~plugins`` so that every other node
applies it too. A node that may have missed such a message (a gap) reapplies every
plugin's stored flag.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from ..exceptions import PluginError
from .hooks import call_hook
from .install import install_once
from .states import get_plugin, state_rows

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.plugins")

#: Internal sync channel of enable/disable ("~" keeps it apart from user names).
ENABLED_CHANNEL = "~plugins"


def set_enabled(app: ClusterApp, name: str, enabled: bool) -> None:
    """Store the flag and apply it on this node (other nodes: see ``apply_enabled``)."""
    plugin = get_plugin(app, name)
    if enabled:
        missing = [d for d in plugin.dependencies if not app.plugins[d].enabled]
        if missing:
            raise PluginError(
                f"Cannot enable plugin {name!r}: its dependencies {missing} are "
                "disabled. Enable them first."
            )
    else:
        dependants = [
            p.name for p in app.plugins.values() if name in p.dependencies and p.enabled
        ]
        if dependants:
            raise PluginError(
                f"Cannot disable plugin {name!r}: enabled plugins {dependants} depend "
                "on it. Disable them first."
            )
    state_rows().filter(app_name=app.name, name=name).update(enabled=enabled)
    apply_enabled(app, name, enabled)
    broadcast_enabled(app, name, enabled)  # the other nodes run apply_enabled


def apply_enabled(app: ClusterApp, name: str, enabled: bool) -> None:
    """Run the enable or disable hooks on this node (idempotent)."""
    plugin = get_plugin(app, name)
    if plugin.enabled == enabled and plugin.loaded == enabled:
        return
    plugin.enabled = enabled
    if enabled:
        if not plugin.loaded:
            call_hook(plugin, "before_load")
            call_hook(plugin, "load")
            plugin.loaded = True
        state = state_rows().get(app_name=app.name, name=name)
        if not state.installed:
            install_once(plugin)
        call_hook(plugin, "after_enable")
    else:
        plugin.loaded = False
        call_hook(plugin, "after_disable")


def subscribe_enabled(app: ClusterApp) -> None:
    """Apply the enable/disable other nodes send; reapply the stored flags on a gap."""
    app.sync_message_manager.subscribe_internal(
        ENABLED_CHANNEL, partial(_apply_enabled, app), partial(_reload_enabled, app)
    )


def broadcast_enabled(app: ClusterApp, name: str, enabled: bool) -> None:
    """Tell the other nodes to apply ``enabled`` to plugin ``name`` (after commit)."""
    app.sync_message_manager.publish_internal(
        ENABLED_CHANNEL, {"plugin": name, "enabled": enabled}, None
    )


def _apply_enabled(app: ClusterApp, message: Any) -> None:
    apply_enabled(app, message["plugin"], bool(message["enabled"]))


def _reload_enabled(app: ClusterApp) -> None:
    """After a gap the database is the truth: apply every plugin's stored flag."""
    states = state_rows().filter(app_name=app.name, name__in=list(app.plugins))
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
