"""Database models of mega_cluster, one module per primitive."""

from .plugins import PluginState

__all__ = ["PluginState"]
