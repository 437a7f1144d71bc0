"""Database models of mega_cluster, one module per primitive."""

from .locks import LockLease, LockWaiter
from .plugins import PluginState

__all__ = ["LockLease", "LockWaiter", "PluginState"]
