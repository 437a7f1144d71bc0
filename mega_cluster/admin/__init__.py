"""The "Mega cluster" admin section: Locks, Queues, Nodes, Plugins and Schedules.

Every page reads the managers' operations API (``lock_manager.list_locks()``,
``event_queue.stats()`` / ``dead_letters()``, ``node_registry.list_nodes()``,
``app.plugins``), never a table of its own, so it shows the same thing on every
backend. Actions are POST-only behind a confirmation page, need a dedicated
permission, and leave an admin log entry.
"""

from django.contrib import admin

from ..models import ClusterLock, ClusterQueue, Node, PluginState, ScheduleState
from .locks import LockAdmin
from .nodes import NodeAdmin
from .plugins import PluginStateAdmin
from .queues import QueueAdmin
from .schedules import ScheduleAdmin

admin.site.register(ClusterLock, LockAdmin)
admin.site.register(ClusterQueue, QueueAdmin)
admin.site.register(Node, NodeAdmin)
admin.site.register(PluginState, PluginStateAdmin)
admin.site.register(ScheduleState, ScheduleAdmin)

__all__ = ["LockAdmin", "NodeAdmin", "PluginStateAdmin", "QueueAdmin", "ScheduleAdmin"]
