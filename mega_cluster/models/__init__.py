"""Database models of mega_cluster, one module per primitive."""

from .events import EventTally, QueuedEvent
from .inbox import InboxEntry, InboxTally
from .locks import LockLease, LockWaiter
from .nodes import DatabaseIdentity, Node
from .ops import ClusterLock, ClusterQueue
from .outbox import OutboxMessage, SyncCursor, SyncSequence
from .plugins import PluginState
from .schedules import ScheduleRun, ScheduleState
from .tasks import TaskRun

__all__ = [
    "ClusterLock",
    "ClusterQueue",
    "DatabaseIdentity",
    "EventTally",
    "InboxEntry",
    "InboxTally",
    "LockLease",
    "LockWaiter",
    "Node",
    "OutboxMessage",
    "PluginState",
    "QueuedEvent",
    "ScheduleRun",
    "ScheduleState",
    "SyncCursor",
    "SyncSequence",
    "TaskRun",
]
