"""The managers of a cluster app: what builds each, and their start order."""

#: attribute name -> dotted path of the manager class, built as ``cls(app)``.
COMPONENTS: dict[str, str] = {
    "lock_manager": "mega_cluster.locks.LockManager",
    "pubsub_manager": "mega_cluster.pubsub.PubSubManager",
    "sync_message_manager": "mega_cluster.sync_messages.SyncMessageManager",
    "event_queue": "mega_cluster.events.EventQueue",
    "cache_manager": "mega_cluster.cache.CacheManager",
    "node_registry": "mega_cluster.nodes.NodeRegistry",
    "outbox": "mega_cluster.outbox.Outbox",
}
#: start order; stop runs in reverse.
START_ORDER = (
    "lock_manager",
    "pubsub_manager",
    "sync_message_manager",
    "cache_manager",
    "event_queue",
    "outbox",  # after the senders: stops (last marks, cursors) before them
    "node_registry",  # last: beats once the rest runs, stops (leaves) first
)

__all__ = ["COMPONENTS", "START_ORDER"]
