"""The node registry of a kit cluster: records in memory, shared by its nodes.

Kit nodes heartbeat like real ones (``node.node_registry.list_nodes()`` lists the
cluster's nodes), but into this store, so no thread of theirs writes to the
test's database behind its back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from ..nodes.stores import NodeStore


class MemoryNodeStore(NodeStore):
    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {}

    def put(self, record: Mapping[str, Any], *, drop_after: float) -> None:
        with self._lock:
            self._records[str(record["node_id"])] = dict(record)

    def remove(self, node_id: str) -> None:
        with self._lock:
            self._records.pop(node_id, None)

    def all(self, *, drop_after: float) -> list[dict[str, Any]]:
        oldest = time.time() - drop_after
        with self._lock:
            for node_id, record in list(self._records.items()):
                if float(record["heartbeat_at"]) < oldest:
                    del self._records[node_id]
            return [dict(record) for record in self._records.values()]

    def ping(self, timeout: float = 2.0) -> None:
        pass
