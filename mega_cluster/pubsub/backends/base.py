"""The pub/sub backend contract.

A backend moves opaque envelope bytes (:mod:`mega_cluster.pubsub.envelope`) between
processes on *wire channels*; everything else (namespacing, skip-self, order,
debounce, handler isolation) is done once, in the manager. Backends are
async-native: every coroutine below runs on the loop the manager chose
(:mod:`mega_cluster.pubsub.runtime`).

The manager sets two callbacks before :meth:`connect`:

``on_message(wire_channel: str, data: bytes)``
    Called for every message received on a subscribed wire channel, in arrival
    order, from the loop (or, for ``memory``, from the publishing thread). Must not
    block.
``on_gap()``
    Called when messages may have been lost: after the connection was lost and
    opened again (subscriptions already restored), or when the driver dropped
    messages it could not buffer.
``on_read_done()``
    Called, from the loop, by backends with ``reads_in_batches`` after the
    messages of each socket read: the manager wakes its dispatcher then, once per
    read, instead of one loop iteration after the first message.

Delivery is at most once: nothing is buffered across an outage, and the gap is
reported through ``on_gap``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import ClassVar

from ...backends import PING_TIMEOUT, Backend
from ...exceptions import BackendUnavailable, ConfigurationError

logger = logging.getLogger("mega_cluster.pubsub")

#: First reconnect delay in seconds; doubled per failed attempt up to the cap.
RECONNECT_BASE_DELAY = 0.1


class PubSubBackend(Backend):
    """Base class of pub/sub backends (subclass it and :class:`Backend`)."""

    #: True when :meth:`publish_sync` sends without the event loop.
    has_sync_publish: ClassVar[bool] = False
    #: True when :meth:`publish` hands the message over before its first ``await``,
    #: so concurrent async publishers keep their call order without a lock.
    publish_in_order: ClassVar[bool] = False
    #: True when the backend calls ``on_read_done()`` after the messages of each
    #: read it delivers (all of them in one step of the loop).
    reads_in_batches: ClassVar[bool] = False
    circuit_name: ClassVar[str] = "pubsub"
    guarded: ClassVar[tuple[str, ...]] = ("publish", "publish_sync")

    on_message: Callable[[str, bytes], None]
    on_gap: Callable[[], None]
    on_read_done: Callable[[], None]

    def __init__(self, app, options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(app, options)
        self.on_message = lambda wire, data: None
        self.on_gap = lambda: None
        self.on_read_done = lambda: None
        #: wire channels subscribed, restored after a reconnect.
        self.channels: set[str] = set()
        self.connected = False
        self.reconnects = 0
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.max_delay: float = app.settings.pubsub["RECONNECT_MAX_DELAY"]

    # naming ------------------------------------------------------------------------

    def wire_channel(self, channel: str) -> str:
        """The broker-side name of ``channel`` in this app (namespaced by app name).

        Must be injective per app; receivers also compare the channel written in the
        envelope, so a lossy mapping only costs bandwidth, never a wrong delivery.
        """
        return f"mc:{self.app.name}:{channel}"

    # lifecycle ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection and start the listener task on the running loop.

        Raises ``BackendUnavailable`` (cause: the driver error) when the server
        cannot be reached.
        """
        self._closing = False
        try:
            await self._open()
        except ConfigurationError:
            await self._drop()
            raise
        except Exception as exc:
            await self._drop()
            raise BackendUnavailable(
                f"{type(self).__name__} cannot connect ({exc}); check that the "
                "server is running and MEGA_CLUSTER PUBSUB OPTIONS."
            ) from exc
        self.connected = True
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the listener and close every connection; idempotent."""
        self._closing = True
        self.connected = False
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # cancelled or already failed
                pass
        await self._drop()
        self.circuit.reset()  # its probe ends with the connection

    async def _run(self) -> None:
        """Listen; on a lost connection reconnect with exponential backoff."""
        while not self._closing:
            try:
                await self._read()
                if self._closing:
                    return
                raise ConnectionError("listener stopped")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any driver error means "lost"
                if self._closing:
                    return
                self.connected = False
                logger.warning(
                    "%s lost its connection (%s); reconnecting",
                    type(self).__name__,
                    exc,
                )
            await self._drop()
            attempt = 0
            while not self._closing:
                delay = min(self.max_delay, RECONNECT_BASE_DELAY * 2**attempt)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                attempt += 1
                try:
                    await self._open()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    await self._drop()
                    log = logger.warning if attempt % 10 == 1 else logger.debug
                    log(
                        "%s reconnect attempt %d failed: %s",
                        type(self).__name__,
                        attempt,
                        exc,
                    )
                    continue
                self.connected = True
                self.reconnects += 1
                logger.warning(
                    "%s reconnected after %d attempt(s); messages sent meanwhile "
                    "were lost",
                    type(self).__name__,
                    attempt,
                )
                self.on_gap()
                break

    # what a backend implements -----------------------------------------------------

    async def _open(self) -> None:
        """Connect and subscribe every channel in ``self.channels``."""
        raise NotImplementedError

    async def _read(self) -> None:
        """Deliver messages to ``on_message`` until the connection is lost (raise)."""
        raise NotImplementedError

    async def _drop(self) -> None:
        """Close whatever is left of the connection, quietly."""

    async def subscribe(self, wire_channel: str) -> None:
        """Subscribe; the subscription is live at the broker when this returns.

        While disconnected the channel is only recorded and restored on reconnect.
        """
        raise NotImplementedError

    async def unsubscribe(self, wire_channel: str) -> None:
        """Stop receiving ``wire_channel``; unknown channels are ignored."""
        raise NotImplementedError

    async def publish(self, wire_channel: str, data: bytes) -> None:
        """Send ``data``; ``BackendUnavailable`` when it cannot be handed over."""
        raise NotImplementedError

    def publish_sync(self, wire_channel: str, data: bytes) -> None:
        """Send from a plain thread without the loop (when ``has_sync_publish``)."""
        raise NotImplementedError

    def max_frame_bytes(self) -> int | None:
        """The largest message the server takes, in bytes (None: no limit that a
        ``MESSAGE_MAX_BYTES`` payload could reach). The manager refuses a bigger
        frame at the call with ``MessageEncodeError``, so nothing is accepted and
        then dropped by the server."""
        return None

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """Raise ``BackendUnavailable`` while the listener is known disconnected
        (and, on a backend with a server, when the server does not answer within
        ``timeout`` seconds)."""
        if self._task is not None and not self.connected:
            raise self.unavailable(ConnectionError("listener disconnected"))

    def unavailable(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"{type(self).__name__} cannot publish ({exc}); the message was not sent."
        )
