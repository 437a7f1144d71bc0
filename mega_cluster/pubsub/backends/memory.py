"""In-process pub/sub: every app of the process shares one hub.

Several apps built in one process (with different node ids, see
``mega_cluster.testing.make_app``) talk to each other as if they were nodes of a
cluster, which is what tests need. Not cluster-safe: other processes never see a
message.
"""

from __future__ import annotations

import asyncio
import threading
from typing import ClassVar

from ... import node
from .base import PubSubBackend


class _Hub:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.subscribers: dict[str, tuple[MemoryPubSubBackend, ...]] = {}

    def add(self, wire: str, backend: MemoryPubSubBackend) -> None:
        with self.lock:
            current = self.subscribers.get(wire, ())
            if backend not in current:
                self.subscribers[wire] = (*current, backend)

    def remove(self, wire: str, backend: MemoryPubSubBackend) -> None:
        with self.lock:
            current = tuple(
                b for b in self.subscribers.get(wire, ()) if b is not backend
            )
            if current:
                self.subscribers[wire] = current
            else:
                self.subscribers.pop(wire, None)


hub = _Hub()


def _after_fork() -> None:
    global hub
    hub = _Hub()


node.on_fork(_after_fork)


class MemoryPubSubBackend(PubSubBackend):
    cluster_safe: ClassVar[bool] = False
    has_sync_publish: ClassVar[bool] = True

    async def _open(self) -> None:
        for wire in self.channels:
            hub.add(wire, self)

    async def _read(self) -> None:
        # Nothing to read from: publish_sync pushes messages. Wait until closed.
        await asyncio.Event().wait()

    async def _drop(self) -> None:
        for wire in list(self.channels):
            hub.remove(wire, self)

    async def subscribe(self, wire_channel: str) -> None:
        self.channels.add(wire_channel)
        if not self._closing:
            hub.add(wire_channel, self)

    async def unsubscribe(self, wire_channel: str) -> None:
        self.channels.discard(wire_channel)
        hub.remove(wire_channel, self)

    async def publish(self, wire_channel: str, data: bytes) -> None:
        self.publish_sync(wire_channel, data)

    def publish_sync(self, wire_channel: str, data: bytes) -> None:
        for backend in hub.subscribers.get(wire_channel, ()):
            backend.on_message(wire_channel, data)
