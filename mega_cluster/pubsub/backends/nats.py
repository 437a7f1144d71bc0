"""NATS core pub/sub (nats-py): one connection per backend, async only.

nats-py's own reconnect is switched off: it re-subscribes silently and would hide
the outage. Our listener reconnects with exponential backoff and reports the gap.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import sys
import threading
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ...backends import PING_TIMEOUT
from .base import PubSubBackend

logger = logging.getLogger("mega_cluster.pubsub")

#: Sync publishes go out in bursts through nats-py internals (False: nc.publish()).
_FAST_PUBLISH = True
_EAGER = sys.version_info >= (3, 12)  # asyncio.Task(eager_start=...)

#: Sync publishers wait (back-pressure) while this many messages are queued.
OUTBOX_LIMIT = 10_000
#: ``publish`` lets the loop run once this many bytes wait in nats-py's buffer.
YIELD_BYTES = 65_536


class NatsPubSubBackend(PubSubBackend):
    requires: ClassVar[tuple[tuple[str, str], ...]] = (("nats", "nats"),)
    required_options: ClassVar[tuple[str, ...]] = ("URL",)
    # nats-py is async only; sync publishers hand messages to the loop through an
    # outbox, so they do not wait for a cross-thread round trip per message
    has_sync_publish: ClassVar[bool] = True
    publish_in_order: ClassVar[bool] = True

    def __init__(self, app, options) -> None:  # type: ignore[no-untyped-def]
        import nats.errors

        super().__init__(app, options)
        # kept: the import statements in publish() were 4% of its cost
        self._errors: Any = nats.errors
        self._nc: Any = None
        self._subs: dict[str, Any] = {}
        self._lost: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._outbox: collections.deque[tuple[str, bytes]] = collections.deque()
        self._outbox_lock = threading.Lock()
        self._drainer: asyncio.Task[None] | None = None
        self._subjects: dict[str, bytes] = {}
        self._max_payload: int | None = None

    def wire_channel(self, channel: str) -> str:
        # "." separates NATS subject tokens; "%" never occurs in a channel name,
        # so escaping "." as "%2E" keeps the mapping injective.
        return f"mc.{self.app.name}.{channel.replace('.', '%2E')}"

    async def _open(self) -> None:
        import nats

        lost = self._lost = asyncio.Event()
        self._loop = asyncio.get_running_loop()

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

    async def close(self) -> None:
        # hand over what sync publishers queued before closing the connection
        drainer, nc = self._drainer, self._nc
        try:
            if drainer is not None and not drainer.done():
                await asyncio.wait_for(asyncio.shield(drainer), 5)
            if nc is not None and not nc.is_closed and self.connected:
                await nc.flush(timeout=2)
        except Exception as exc:
            logger.warning("NATS flush before close failed: %s", exc)
        await super().close()

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
        nc = self._nc
        if nc is None or not self.connected:
            raise self.unavailable(ConnectionError("not connected"))
        try:
            if not (_FAST_PUBLISH and hasattr(nc, "_send_command")):
                await nc.publish(wire_channel, data)
                return
            # as _publish_batch; the PUB line is queued before the first await,
            # which is what publish_in_order promises
            if nc.is_closed or not nc.is_connected:
                raise ConnectionError("not connected")
            if len(data) > nc.max_payload:
                raise self._errors.MaxPayloadError
            # nats-py internals, checked above (see _publish_batch for why)
            await nc._send_command(self._pub_line(wire_channel, data))  # noqa: SLF001
            if nc._flush_queue is not None and nc._flush_queue.empty():  # noqa: SLF001
                await nc._flush_pending()  # noqa: SLF001
            elif nc._pending_data_size >= YIELD_BYTES:  # noqa: SLF001
                # A caller publishing in a loop that awaits nothing else never
                # lets nats-py's flusher (kicked above) run: it would write only
                # when nats-py's 2 MiB buffer is full, receivers waiting for the
                # whole burst and every other task (the listener) for the loop.
                await asyncio.sleep(0)
        except (self._errors.Error, ConnectionError) as exc:
            raise self.unavailable(exc) from exc

    def _pub_line(self, wire: str, data: bytes) -> bytes:
        subject = self._subjects.get(wire)
        if subject is None:
            subject = wire.encode()
            if len(self._subjects) < 10_000:  # channel names are caller-chosen
                self._subjects[wire] = subject
        return b"PUB %s %d\r\n%s\r\n" % (subject, len(data), data)

    def max_frame_bytes(self) -> int | None:
        # the server's INFO max_payload (nats-py keeps it), remembered across
        # outages so sync messages queued for after commit are checked too
        nc = self._nc
        if nc is not None:
            self._max_payload = int(nc.max_payload)
        return self._max_payload

    def publish_sync(self, wire_channel: str, data: bytes) -> None:
        loop = self._loop
        if not self.connected or self._nc is None or loop is None:
            raise self.unavailable(ConnectionError("not connected"))
        if len(self._outbox) >= OUTBOX_LIMIT:
            deadline = time.monotonic() + 15
            while len(self._outbox) >= OUTBOX_LIMIT:
                if time.monotonic() > deadline or not self.connected:
                    raise self.unavailable(TimeoutError("outbox not draining"))
                time.sleep(0.001)
        with self._outbox_lock:
            self._outbox.append((wire_channel, data))
            kick = len(self._outbox) == 1
        if kick:
            loop.call_soon_threadsafe(self._kick)

    def _kick(self) -> None:
        # on the loop: one drainer at a time keeps the outbox order
        if self._drainer is None or self._drainer.done():
            loop = asyncio.get_running_loop()
            if _EAGER:
                # runs now, up to its first real wait (usually to the end): one
                # loop iteration less between a sync publish and the socket
                self._drainer = asyncio.Task(self._drain(), loop=loop, eager_start=True)
            else:
                self._drainer = loop.create_task(self._drain())

    async def _drain(self) -> None:
        lost = 0
        outbox = self._outbox
        while True:
            # everything queued so far in one go: one lock round per burst
            with self._outbox_lock:
                if not outbox:
                    break
                batch = list(outbox)
                outbox.clear()
            nc = self._nc
            try:
                if nc is None or nc.is_closed or not nc.is_connected:
                    raise ConnectionError("not connected")
                if _FAST_PUBLISH and hasattr(nc, "_send_command"):
                    await self._publish_batch(nc, batch)
                else:
                    for wire, data in batch:
                        await nc.publish(wire, data)
            except Exception as exc:
                lost += len(batch)
                logger.debug("NATS publish failed: %s", exc)
        if lost:
            logger.warning(
                "%d message(s) published during a NATS outage were not sent", lost
            )

    async def _publish_batch(self, nc: Any, batch: list[tuple[str, bytes]]) -> None:
        # What nc.publish() does for a message without headers, minus the subject
        # validation (ours are valid by construction) and the flusher kick per
        # message, which were half the cost of a sync publish. The PUB line is
        # the NATS protocol; _send_command/_flush_pending are nats-py internals
        # unchanged since 2.0 (checked above, nc.publish() otherwise).
        max_payload = nc.max_payload
        send = nc._send_command  # noqa: SLF001 - nats-py internal, see above
        pub_line = self._pub_line
        too_big = 0
        for wire, data in batch:
            if len(data) > max_payload:
                too_big += 1
                continue
            await send(pub_line(wire, data))
        await nc._flush_pending()  # noqa: SLF001 - nats-py internal, see above
        if too_big:
            logger.warning(
                "%d message(s) over the NATS server's max_payload (%d bytes) were "
                "not sent",
                too_big,
                max_payload,
            )

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        super().ping(timeout)
        if self._task is not None:
            return
        # not started: a plain socket, so a health check never needs an event loop
        url = urlsplit(self.options["URL"])
        try:
            with socket.create_connection(
                (url.hostname or "127.0.0.1", url.port or 4222), timeout=timeout
            ) as conn:
                greeting = conn.recv(8)
        except OSError as exc:
            raise self.unavailable(exc) from exc
        if not greeting.startswith(b"INFO"):
            raise self.unavailable(ConnectionError(f"not a NATS server: {greeting!r}"))
