"""Database models of mega_cluster, one module per primitive."""

from .events import QueuedEvent
from .locks import LockLease, LockWaiter
from .plugins import PluginState

__all__ = ["LockLease", "LockWaiter", "PluginState", "QueuedEvent"]
