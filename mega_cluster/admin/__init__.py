"""The "Mega cluster" admin section: Locks, Queues, Nodes, Plugins, Schedules and
Outbox.

Every page reads the managers' operations API (``lock_manager.list_locks()``,
``event_queue.stats()`` / ``dead_letters()``, ``node_registry.list_nodes()``,
``app.plugins``), never a table of its own, so it shows the same thing on every
backend (the Outbox page lists the outbox table, read-only). Actions are POST-only behind a confirmation page, need a dedicated
permission, and leave an admin log entry.
"""

from django.contrib import admin

from ..models import (
    ClusterLock,
    ClusterQueue,
    Node,
    OutboxMessage,
    PluginState,
    ScheduleState,
)
from .locks import LockAdmin
from .nodes import NodeAdmin
from .outbox import OutboxAdmin
from .plugins import PluginStateAdmin
from .queues import QueueAdmin
from .schedules import ScheduleAdmin

admin.site.register(ClusterLock, LockAdmin)
admin.site.register(ClusterQueue, QueueAdmin)
admin.site.register(Node, NodeAdmin)
admin.site.register(PluginState, PluginStateAdmin)
admin.site.register(ScheduleState, ScheduleAdmin)
admin.site.register(OutboxMessage, OutboxAdmin)

__all__ = [
    "LockAdmin",
    "NodeAdmin",
    "OutboxAdmin",
    "PluginStateAdmin",
    "QueueAdmin",
    "ScheduleAdmin",
]
