"""Redis pub/sub (redis-py): one subscriber connection per backend, async.

Publishing from a plain thread uses redis-py's sync client (thread-safe pool), so a
sync ``publish()`` costs one round trip and never touches the event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from .base import PubSubBackend

#: How long a subscriber waits for the broker to confirm SUBSCRIBE.
SUBSCRIBE_TIMEOUT = 10.0
#: An idle subscriber connection is PINGed this often (OPTIONS["PING_INTERVAL"]);
#: no answer within the same time again means a dead (half-open) connection.
PING_INTERVAL = 10.0


class RedisPubSubBackend(PubSubBackend):
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("redis", "redis"),)
    required_options: ClassVar[tuple[str, ...]] = ("URL",)
    has_sync_publish: ClassVar[bool] = True

    def __init__(self, app, options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, options)
        self._client: Any = None
        self._pubsub: Any = None
        self._sync_client: Any = None
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        self._last_seen = 0.0
        self.ping_interval = float(self.options.get("PING_INTERVAL", PING_INTERVAL))

    def _client_kwargs(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No silent driver-level reconnect: our loop reconnects and reports the gap.
        return {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": 5}

    async def _open(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff

        self._client = aioredis.Redis.from_url(
            self.options["URL"],
            retry=AsyncRetry(NoBackoff(), 0),
            socket_connect_timeout=5,
        )
        self._pubsub = self._client.pubsub()
        await self._client.ping()
        if self.channels:
            await self._pubsub.subscribe(*self.channels)
        else:
            # connect the subscriber connection now so _read() can block on it
            await self._pubsub.subscribe(f"mc:{self.app.name}:__connect__")

    async def _read(self) -> None:
        pubsub = self._pubsub
        on_message = self.on_message
        self._last_seen = time.monotonic()
        watchdog = asyncio.get_running_loop().create_task(self._watchdog(pubsub))
        try:
            await self._read_messages(pubsub, on_message)
        finally:
            watchdog.cancel()

    async def _watchdog(self, pubsub: Any) -> None:
        # A blocked read never notices a peer that vanished without closing TCP.
        interval = self.ping_interval
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self._last_seen < interval:
                continue
            await pubsub.ping()
            await asyncio.sleep(interval)
            if time.monotonic() - self._last_seen >= 2 * interval:
                # closing the socket makes the blocked read raise: reconnect path
                await pubsub.connection.disconnect()
                return

    async def _read_messages(self, pubsub: Any, on_message: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            self._last_seen = time.monotonic()
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                on_message(message["channel"].decode(), message["data"])
            elif kind == "subscribe":
                waiter = self._confirmed.pop(message["channel"].decode(), None)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def _drop(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        for waiter in self._confirmed.values():
            if not waiter.done():
                waiter.cancel()
        self._confirmed.clear()
        for closing in (pubsub, client):
            if closing is not None:
                try:
                    await closing.aclose()
                except Exception:  # the connection is gone anyway
                    pass
        if self._closing and self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    async def subscribe(self, wire_channel: str) -> None:
        self.channels.add(wire_channel)
        if not self.connected or self._pubsub is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._confirmed[wire_channel] = waiter
        await self._pubsub.subscribe(wire_channel)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), SUBSCRIBE_TIMEOUT)
        except asyncio.CancelledError:
            # the connection dropped meanwhile; restored on reconnect
            if not waiter.cancelled():
                raise

    async def unsubscribe(self, wire_channel: str) -> None:
        self.channels.discard(wire_channel)
        if self.connected and self._pubsub is not None:
            await self._pubsub.unsubscribe(wire_channel)

    async def publish(self, wire_channel: str, data: bytes) -> None:
        import redis

        if self._client is None:
            raise self.unavailable(ConnectionError("not connected"))
        try:
            await self._client.publish(wire_channel, data)
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc

    def publish_sync(self, wire_channel: str, data: bytes) -> None:
        import redis

        client = self._sync_client
        if client is None:
            client = self._sync_client = redis.Redis.from_url(
                self.options["URL"], **self._client_kwargs()
            )
        try:
            client.publish(wire_channel, data)
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc

    def ping(self) -> None:
        import redis

        client = redis.Redis.from_url(self.options["URL"], **self._client_kwargs())
        try:
            client.ping()
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc
        finally:
            client.close()
