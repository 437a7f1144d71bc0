"""NATS core pub/sub (nats-py): one connection per backend, async only.

nats-py's own reconnect is switched off: it re-subscribes silently and would hide
the outage. Our listener reconnects with exponential backoff and reports the gap.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from .base import PubSubBackend

logger = logging.getLogger("mega_cluster.pubsub")


class NatsPubSubBackend(PubSubBackend):
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("nats", "nats"),)
    required_options: ClassVar[tuple[str, ...]] = ("URL",)

    def __init__(self, app, options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, options)
        self._nc: Any = None
        self._subs: dict[str, Any] = {}
        self._lost: asyncio.Event | None = None

    def wire_channel(self, channel: str) -> str:
        # "." separates NATS subject tokens; "%" never occurs in a channel name,
        # so escaping "." as "%2E" keeps the mapping injective.
        return f"mc.{self.app.name}.{channel.replace('.', '%2E')}"

    async def _open(self) -> None:
        import nats

        lost = self._lost = asyncio.Event()

        async def on_closed() -> None:
            lost.set()

        async def on_error(exc: Exception) -> None:
            from nats.errors import SlowConsumerError

            if isinstance(exc, SlowConsumerError):
                logger.warning("NATS dropped messages for a slow consumer: %s", exc)
                self.on_gap()
            else:
                logger.debug("NATS error: %s", exc)

        connecting = nats.connect(
            self.options["URL"],
            allow_reconnect=False,
            # without these nats-py retries the first connect for minutes
            max_reconnect_attempts=1,
            reconnect_time_wait=0.1,
            connect_timeout=5,
            ping_interval=10,
            max_outstanding_pings=2,
            closed_cb=on_closed,
            disconnected_cb=on_closed,
            error_cb=on_error,
        )
        self._nc = await asyncio.wait_for(connecting, 10)
        self._subs = {}
        for wire in self.channels:
            await self._subscribe(wire)
        await self._nc.flush(timeout=5)

    async def _subscribe(self, wire: str) -> None:
        on_message = self.on_message

        async def deliver(msg: Any) -> None:
            on_message(wire, msg.data)

        self._subs[wire] = await self._nc.subscribe(wire, cb=deliver)

    async def _read(self) -> None:
        assert self._lost is not None
        await self._lost.wait()
        raise ConnectionError("NATS connection closed")

    async def _drop(self) -> None:
        nc, self._nc = self._nc, None
        self._subs = {}
        if nc is not None and not nc.is_closed:
            try:
                await asyncio.wait_for(nc.close(), 5)
            except Exception:  # the connection is gone anyway
                pass

    async def subscribe(self, wire_channel: str) -> None:
        self.channels.add(wire_channel)
        if not self.connected or self._nc is None or wire_channel in self._subs:
            return
        await self._subscribe(wire_channel)
        # the server has processed SUB once a PING round trip returns
        await self._nc.flush(timeout=5)

    async def unsubscribe(self, wire_channel: str) -> None:
        self.channels.discard(wire_channel)
        sub = self._subs.pop(wire_channel, None)
        if sub is not None and self.connected:
            await sub.unsubscribe()

    async def publish(self, wire_channel: str, data: bytes) -> None:
        from nats.errors import Error as NatsError

        nc = self._nc
        if nc is None or not self.connected:
            raise self.unavailable(ConnectionError("not connected"))
        try:
            await nc.publish(wire_channel, data)
        except NatsError as exc:
            raise self.unavailable(exc) from exc
