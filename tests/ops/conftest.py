"""Fixtures of the operations-console tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

#: Short heartbeat timings so a node is seen dead within a second or two.
FAST_NODES = {"NODE_HEARTBEAT": 0.1, "NODE_TIMEOUT": 0.6}


def redis_settings(url: str, prefix: str) -> dict[str, Any]:
    """Locks, pub/sub on Redis (keys carrying ``prefix``) and the database queue."""
    return {
        "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url, "KEY_PREFIX": prefix}},
        "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": url}},
        "EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.05},
    }


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)
