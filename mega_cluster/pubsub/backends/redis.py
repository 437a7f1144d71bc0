"""Redis pub/sub (redis-py): one subscriber connection per backend, async.

Publishing from a plain thread sends ``PUBLISH`` on a direct connection
(:mod:`mega_cluster.redis_client`, never re-sent), so a sync ``publish()`` costs
one round trip, no pool checkout, and never touches the event loop.

The subscriber connection is opened and subscribed by redis-py, but its replies
are read here, a whole socket read at a time (:func:`parse`): redis-py's
``get_message()``, with several awaits, a retry wrapper and observability hooks
per message, cost 40-60 µs of CPU per message where this costs 3-5 µs.

On a Redis Cluster (``OPTIONS["CLUSTER"] = True``) it uses sharded pub/sub
(``SSUBSCRIBE``/``SPUBLISH``, Redis >= 7): :mod:`.redis_shards`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ... import redis_client
from ...backends import PING_TIMEOUT
from . import redis_shards
from .base import PubSubBackend

logger = logging.getLogger("mega_cluster.pubsub")

#: How long a subscriber waits for the broker to confirm SUBSCRIBE.
SUBSCRIBE_TIMEOUT = 10.0
#: An idle subscriber connection is PINGed this often (OPTIONS["PING_INTERVAL"]);
#: no answer within the same time again means a dead (half-open) connection.
PING_INTERVAL = 10.0
#: Bytes asked of the subscriber socket per read.
READ_SIZE = 65536
#: Default ``OPTIONS["SOCKET_TIMEOUT"]``: how long a publish waits for the server
#: (connect, send, reply) before it raises ``BackendUnavailable`` (seconds).
SOCKET_TIMEOUT = 5.0


class Incomplete(Exception):
    """The buffer ends inside a reply: read more."""


_INCOMPLETE = Incomplete()
# a published message as RESP2 array / RESP3 push: type, channel, data
_MESSAGE2 = b"*3\r\n$7\r\nmessage\r\n$"
_MESSAGE3 = b">3\r\n$7\r\nmessage\r\n$"
# the same for sharded pub/sub (a Redis Cluster)
_SMESSAGE2 = b"*3\r\n$8\r\nsmessage\r\n$"
_SMESSAGE3 = b">3\r\n$8\r\nsmessage\r\n$"


class ErrorReply(bytes):
    """A RESP error (``-ERR …``) found on the subscriber connection."""


def parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2/RESP3 reply from ``buf[pos:]``: (value, position after it).

    Bulk and simple strings stay ``bytes``, aggregates become lists (maps flat,
    attributes skipped), errors are :class:`ErrorReply`; raises ``Incomplete``
    when the reply is not all in ``buf``.
    """
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    head = buf[pos + 1 : end]
    pos = end + 2
    if kind in b"$=!":  # bulk string, verbatim string, bulk error
        size = int(head)
        if size < 0:
            return None, pos
        stop = pos + size
        if stop + 2 > len(buf):
            raise _INCOMPLETE
        value = buf[pos:stop]
        return (ErrorReply(value) if kind == 33 else value), stop + 2
    if kind in b"*>~%|":  # array, push, set, map, attribute
        size = int(head)
        if size < 0:
            return None, pos
        if kind in b"%|":
            size *= 2
        items = []
        for _ in range(size):
            item, pos = parse(buf, pos)
            items.append(item)
        if kind == 124:  # attributes describe the reply that follows them
            return parse(buf, pos)
        return items, pos
    if kind == 45:  # "-": error
        return ErrorReply(head), pos
    if kind in b"+:_#,(":  # simple string, integer, null, boolean, double, big number
        return head, pos
    raise ConnectionError(f"unexpected RESP type byte {kind!r} from the server")


class RedisPubSubBackend(PubSubBackend):
    """Pub/sub on one Redis server, a Sentinel-managed primary or a Redis Cluster.

    ``OPTIONS``: where Redis is, as :mod:`mega_cluster.redis_client` reads it
    (``URL``, ``SENTINELS`` + ``SERVICE_NAME``, ``CACHE``, or ``CLUSTER = True``
    with the ``URL`` of a node: sharded pub/sub, :mod:`.redis_shards`);
    ``PING_INTERVAL``; ``SOCKET_TIMEOUT`` (default 5 s): a publish to a server
    that does not answer (frozen, a network black hole) raises
    ``BackendUnavailable`` after that long (twice that at most when it must
    connect first) instead of hanging.
    """

    requires: ClassVar[tuple[tuple[str, str], ...]] = (("redis", "redis"),)
    has_sync_publish: ClassVar[bool] = True
    reads_in_batches: ClassVar[bool] = True

    def __init__(self, app, options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, options)
        self._client: Any = None
        self._node: Any = None  # cluster: the client of the slot's owner
        self._known: list[tuple[str, int]] = []  # cluster: nodes seen so far
        self._pubsub: Any = None
        self._direct: Any = None
        self._names: dict[bytes, str] = {}
        self._confirmed: dict[str, asyncio.Future[None]] = {}
        #: SUNSUBSCRIBEs we sent whose reply has not come yet, per channel: that
        #: reply is ours even when the channel was subscribed again meanwhile.
        self._unsubscribing: dict[str, int] = {}
        self._last_seen = 0.0
        self.ping_interval = float(self.options.get("PING_INTERVAL", PING_INTERVAL))
        self.socket_timeout = float(self.options.get("SOCKET_TIMEOUT", SOCKET_TIMEOUT))
        self.cluster = bool(self.options.get("CLUSTER"))
        if self.cluster:
            self._kinds = (redis_shards.MESSAGE, redis_shards.SUBSCRIBED)
            self._prefixes = (_SMESSAGE2, _SMESSAGE3)
            self._publish_command = "SPUBLISH"
        else:
            self._kinds = (b"message", b"subscribe")
            self._prefixes = (_MESSAGE2, _MESSAGE3)
            self._publish_command = "PUBLISH"
        self._connect_channel = self.wire_channel("__connect__")

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        problems = redis_client.check_options(options, cls.__name__)
        timeout = options.get("SOCKET_TIMEOUT", SOCKET_TIMEOUT)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= 3600
        ):
            problems.append(
                f"OPTIONS['SOCKET_TIMEOUT'] is {timeout!r}: give seconds, a number "
                "above 0 and at most 3600 (default 5)."
            )
        return problems

    def wire_channel(self, channel: str) -> str:
        if self.options.get("CLUSTER"):
            return redis_shards.wire_channel(self.app.name, channel)
        return super().wire_channel(channel)

    def _client_kwargs(self) -> dict[str, Any]:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # No silent driver-level reconnect: our loop reconnects and reports the gap.
        # The publisher's connections: a server that stops answering is an error.
        return {
            "retry": Retry(NoBackoff(), 0),
            "socket_connect_timeout": min(self.socket_timeout, 5.0),
            "socket_timeout": self.socket_timeout,
        }

    async def _open(self) -> None:
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff

        kwargs = {"retry": AsyncRetry(NoBackoff(), 0), "socket_connect_timeout": 5}
        if self.cluster:
            self._client, self._node, self._known = await redis_shards.open_clients(
                self.options, self._connect_channel, self._known, **kwargs
            )
            subscriber = self._node
        else:
            self._client = subscriber = redis_client.async_client(
                self.options, **kwargs
            )
        self._pubsub = subscriber.pubsub()
        await subscriber.ping()
        # with no channel yet, one keeps the subscriber connection open for _read()
        channels = self.channels or {self._connect_channel}
        if self.cluster:
            await self._pubsub.ssubscribe(*channels)
        else:
            await self._pubsub.subscribe(*channels)

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
        reader = getattr(pubsub.connection, "_reader", None)
        if not isinstance(reader, asyncio.StreamReader):  # redis-py internals moved
            await self._get_messages(pubsub, on_message)
            return
        # redis-py only sends on this connection from now on (subscribe, ping and
        # unsubscribe never read their replies): every reply is read here
        names = self._names
        read_done = self.on_read_done
        first_prefix, second_prefix = self._prefixes
        head = len(first_prefix) - 1
        buf = b""
        pos = 0
        while True:
            chunk = await reader.read(READ_SIZE)
            if not chunk:
                raise ConnectionError("Redis closed the subscriber connection")
            self._last_seen = time.monotonic()
            buf = buf[pos:] + chunk if pos < len(buf) else chunk
            pos = 0
            end = len(buf)
            while pos < end:
                if buf.startswith(first_prefix, pos) or buf.startswith(
                    second_prefix, pos
                ):
                    # the hot path, inlined: two bulk strings
                    start = pos + head
                    stop = buf.find(b"\r\n", start)
                    if stop < 0:
                        break
                    first = stop + 2
                    after = first + int(buf[start + 1 : stop]) + 2
                    stop = buf.find(b"\r\n", after)
                    if stop < 0:
                        break
                    if buf[after] == 36:  # "$": else the general parser decides
                        second = stop + 2
                        last = second + int(buf[after + 1 : stop])
                        if last + 2 > end:
                            break
                        wire = buf[first : after - 2]
                        name = names.get(wire)
                        if name is None:
                            name = wire.decode()
                            if len(names) < 10_000:  # channel names are caller-chosen
                                names[wire] = name
                        on_message(name, buf[second:last])
                        pos = last + 2
                        continue
                try:
                    reply, pos = parse(buf, pos)
                except Incomplete:
                    break
                self._handle_reply(reply, on_message)
            read_done()

    def _handle_reply(self, reply: Any, on_message: Any) -> None:
        if isinstance(reply, ErrorReply):
            logger.warning("Redis subscriber connection: %s", reply.decode())
            return
        if type(reply) is not list or not reply or not isinstance(reply[0], bytes):
            return  # PONG (RESP3) or a reply we never asked for
        kind = reply[0].lower()
        message, subscribed = self._kinds
        if kind == message and len(reply) == 3:
            on_message(reply[1].decode(), reply[2])
        elif kind == subscribed and len(reply) == 3:
            self._confirm(reply[1].decode())
        elif kind == redis_shards.UNSUBSCRIBED and self._ours(reply):
            pass
        elif kind == redis_shards.UNSUBSCRIBED and redis_shards.server_unsubscribed(
            reply, self.channels, self._connect_channel
        ):
            # the channel's slot left this node (failover, resharding)
            raise ConnectionError(
                f"Redis Cluster moved the slot of {reply[1].decode()!r}"
            )

    def _ours(self, reply: list[Any]) -> bool:
        """Whether a ``sunsubscribe`` reply answers one of our SUNSUBSCRIBEs."""
        name = (
            reply[1].decode() if len(reply) > 1 and isinstance(reply[1], bytes) else ""
        )
        pending = self._unsubscribing.get(name, 0)
        if pending <= 0:
            return False
        if pending == 1:
            del self._unsubscribing[name]
        else:
            self._unsubscribing[name] = pending - 1
        return True

    async def _get_messages(self, pubsub: Any, on_message: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            self._last_seen = time.monotonic()
            if message is None:
                continue
            kind = message["type"]
            if kind in ("message", "smessage"):
                on_message(message["channel"].decode(), message["data"])
                self.on_read_done()
            elif kind in ("subscribe", "ssubscribe"):
                self._confirm(message["channel"].decode())
            elif kind == "sunsubscribe":
                self._handle_reply([b"sunsubscribe", message["channel"]], on_message)

    def _confirm(self, wire_channel: str) -> None:
        """The broker confirmed SUBSCRIBE to ``wire_channel``: wake its waiter."""
        waiter = self._confirmed.pop(wire_channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _drop(self) -> None:
        pubsub, client, node = self._pubsub, self._client, self._node
        self._pubsub = self._client = self._node = None
        self._unsubscribing = {}
        for waiter in self._confirmed.values():
            if not waiter.done():
                waiter.cancel()
        self._confirmed.clear()
        for closing in (pubsub, node, client):
            if closing is not None:
                try:
                    await closing.aclose()
                except Exception:  # the connection is gone anyway
                    pass
        if self._closing and self._direct is not None:
            self._direct.close()
            self._direct = None

    async def subscribe(self, wire_channel: str) -> None:
        self.channels.add(wire_channel)
        if not self.connected or self._pubsub is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._confirmed[wire_channel] = waiter
        if self.cluster:
            await self._pubsub.ssubscribe(wire_channel)
        else:
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
            if self.cluster:
                pending = self._unsubscribing.get(wire_channel, 0)
                self._unsubscribing[wire_channel] = pending + 1
                await self._pubsub.sunsubscribe(wire_channel)
            else:
                await self._pubsub.unsubscribe(wire_channel)

    async def publish(self, wire_channel: str, data: bytes) -> None:
        import redis

        if self._client is None:
            raise self.unavailable(ConnectionError("not connected"))
        try:
            # The subscriber's client has no socket timeout (it waits for
            # messages): a publish is bounded here.
            await asyncio.wait_for(
                self._client.execute_command(self._publish_command, wire_channel, data),
                self.socket_timeout,
            )
        except (redis.RedisError, TimeoutError) as exc:
            raise self.unavailable(exc) from exc

    def publish_sync(self, wire_channel: str, data: bytes) -> None:
        import redis

        direct = self._direct
        if direct is None:
            client = redis_client.sync_client(self.options, **self._client_kwargs())
            # never re-sent: a PUBLISH whose reply was lost may have been delivered
            direct = self._direct = redis_client.DirectConnections(
                client, resend=False, timeout=self.socket_timeout
            )
        try:
            direct.execute(self._publish_command, wire_channel, data)
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        super().ping(timeout)
        import redis

        client = redis_client.sync_client(
            self.options,
            **{
                **self._client_kwargs(),
                "socket_timeout": timeout,
                "socket_connect_timeout": timeout,
            },
        )
        try:
            client.ping()
        except redis.RedisError as exc:
            raise self.unavailable(exc) from exc
        finally:
            if redis_client.owns_client(self.options):
                client.close()
