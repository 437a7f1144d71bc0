"""Database models of mega_cluster, one module per primitive."""

from .events import EventTally, QueuedEvent
from .locks import LockLease, LockWaiter
from .nodes import Node
from .ops import ClusterLock, ClusterQueue
from .plugins import PluginState

__all__ = [
    "ClusterLock",
    "ClusterQueue",
    "EventTally",
    "LockLease",
    "LockWaiter",
    "Node",
    "PluginState",
    "QueuedEvent",
]
