"""Pub/sub over the project's Channels layer (``CHANNEL_LAYERS``), via group_send.

Each backend owns one layer channel and adds it to one group per subscribed wire
channel. ``OPTIONS["LAYER"]`` picks the layer alias (default ``"default"``).
Delivery follows the layer: channels_redis drops messages for a full channel
(``capacity``) and expires group membership after ``group_expiry``, so the
membership is refreshed while listening.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from ...exceptions import ConfigurationError
from .base import PubSubBackend

logger = logging.getLogger("mega_cluster.pubsub")

#: Group membership is re-added this often (channels_redis expires it).
GROUP_REFRESH = 600.0
MESSAGE_TYPE = "mega_cluster.message"


class ChannelsPubSubBackend(PubSubBackend):
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("channels", "channels"),)

    def __init__(self, app, options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, options)
        self._layer: Any = None
        self._name: str | None = None
        self._refresher: asyncio.Task[None] | None = None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        from django.conf import settings

        alias = options.get("LAYER", "default")
        if alias not in (getattr(settings, "CHANNEL_LAYERS", None) or {}):
            return [
                f"CHANNEL_LAYERS has no layer {alias!r}, which {cls.__name__} "
                "publishes through; configure it or set OPTIONS['LAYER']."
            ]
        return []

    def wire_channel(self, channel: str) -> str:
        # Group names are limited to 100 characters of [A-Za-z0-9_.-].
        digest = hashlib.sha256(channel.encode()).hexdigest()[:40]
        return f"mc.{self.app.name}.{digest}"

    def _get_layer(self) -> Any:
        from channels.layers import get_channel_layer

        alias = self.options.get("LAYER", "default")
        layer = get_channel_layer(alias)
        if layer is None:
            raise ConfigurationError(
                f"MEGA_CLUSTER PUBSUB BACKEND 'channels' needs CHANNEL_LAYERS[{alias!r}]"
                "; configure the layer or set PUBSUB OPTIONS['LAYER']."
            )
        return layer

    async def _open(self) -> None:
        layer = self._layer = self._get_layer()
        self._name = await layer.new_channel("mc.")
        for wire in self.channels:
            await layer.group_add(wire, self._name)

    async def _read(self) -> None:
        layer, name = self._layer, self._name
        on_message = self.on_message
        self._refresher = asyncio.get_running_loop().create_task(self._refresh())
        try:
            while True:
                try:
                    message = await layer.receive(name)
                except Exception as exc:
                    if _is_read_timeout(exc):
                        # channels_redis blocks 5 s in BZPOPMIN and redis-py >= 8
                        # times reads out after 5 s too: an idle layer, not an
                        # outage (a dead server raises ConnectionError instead)
                        continue
                    raise
                if message.get("type") == MESSAGE_TYPE:
                    # a malformed message is the manager's to count and skip:
                    # a KeyError here would look like a lost connection
                    on_message(message.get("w", ""), message.get("d", b""))
        finally:
            self._refresher.cancel()

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(GROUP_REFRESH)
            for wire in list(self.channels):
                try:
                    await self._layer.group_add(wire, self._name)
                except Exception as exc:  # the reader notices outages
                    logger.debug("group refresh failed: %s", exc)

    async def _drop(self) -> None:
        layer, name = self._layer, self._name
        self._name = None
        if layer is None or name is None:
            return
        for wire in list(self.channels):
            try:
                await asyncio.wait_for(layer.group_discard(wire, name), 2)
            except Exception:  # expires by itself
                pass

    async def subscribe(self, wire_channel: str) -> None:
        self.channels.add(wire_channel)
        if self.connected and self._name is not None:
            await self._layer.group_add(wire_channel, self._name)

    async def unsubscribe(self, wire_channel: str) -> None:
        self.channels.discard(wire_channel)
        if self.connected and self._name is not None:
            await self._layer.group_discard(wire_channel, self._name)

    async def publish(self, wire_channel: str, data: bytes) -> None:
        layer = self._layer or self._get_layer()
        try:
            await layer.group_send(
                wire_channel, {"type": MESSAGE_TYPE, "w": wire_channel, "d": data}
            )
        except (ConnectionError, OSError) as exc:
            raise self.unavailable(exc) from exc
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise self.unavailable(exc) from exc
            raise


def _is_read_timeout(exc: BaseException) -> bool:
    return type(exc).__name__ == "TimeoutError" and type(exc).__module__.startswith(
        "redis"
    )
