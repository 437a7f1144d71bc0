"""Each plugin's sync channel: its messages to ``handle_sync_message`` and the gaps
of that channel to ``handle_sync_gap()``, on an enabled plugin only."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..inbox.marks import is_idempotent
from .hooks import call_hook

if TYPE_CHECKING:
    from ..registry import ClusterApp
    from .base import Plugin


def subscribe_plugins(app: ClusterApp) -> None:
    """Route each plugin's sync channel to its hooks (called when the app starts)."""
    manager = app.sync_message_manager
    for plugin in app.plugins.values():
        manager.subscribe_internal(
            plugin.sync_channel,
            _PluginHook(plugin, "handle_sync_message"),
            _PluginHook(plugin, "handle_sync_gap"),
            # @idempotent on handle_sync_message: through the inbox, consumer
            # "sync:plugin:<name>:handle_sync_message"
            "handle_sync_message"
            if is_idempotent(plugin.handle_sync_message)
            else False,
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
        if self.plugin.enabled:
            call_hook(self.plugin, self.hook, *args)

    def __repr__(self) -> str:
        return (
            f"{type(self.plugin).__qualname__}.{self.hook} "
            f"(plugin {self.plugin.name!r})"
        )
