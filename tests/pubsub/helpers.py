"""Shared helpers of the pub/sub and sync-message tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [settings.REDIS_URL],
            # every key of this run carries the run id (deleted at session end)
            "prefix": f"mctest{settings.RUN_ID}",
            "capacity": 10_000,
        },
    }
}


def pubsub_settings(backend: str, **extra: Any) -> dict[str, Any]:
    """The PUBSUB section for ``backend`` on the shared test servers."""
    options = {
        "memory": {},
        "redis": {"URL": settings.REDIS_URL},
        "nats": {"URL": settings.NATS_URL},
        "channels": {},
        # the run's private Sentinel topology (the contract's backend fixture)
        "redis-sentinel": {"URL": getattr(settings, "MC_SENTINEL_URL", "")},
        # the run's private Redis Cluster: sharded pub/sub
        "redis-cluster": {
            "URL": getattr(settings, "MC_CLUSTER_URL", ""),
            "CLUSTER": True,
        },
    }[backend]
    name = "redis" if backend.startswith("redis") else backend
    return {"BACKEND": name, "OPTIONS": options, **extra}


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Recorder:
    """A handler that records payloads (thread-safe) and can be waited on."""

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self.items: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, payload: Any) -> None:
        with self._lock:
            self.items.append(payload)

    def __repr__(self) -> str:
        return f"<Recorder {self.name}>"

    def wait(self, count: int, timeout: float = 5.0) -> list[Any]:
        wait_for(lambda: len(self.items) >= count, timeout)
        return list(self.items)

    def wait_for_item(self, item: Any, timeout: float = 5.0) -> list[Any]:
        wait_for(lambda: item in self.items, timeout)
        return list(self.items)
