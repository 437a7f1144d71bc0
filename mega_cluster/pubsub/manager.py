"""``app.pubsub_manager``: channels, handlers, skip-self, debounce, the listener."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Hashable
from functools import partial
from typing import TYPE_CHECKING, Any

from ..backends import load_backend
from ..validation import validate_name
from . import envelope, runtime
from .backends.base import PubSubBackend
from .dispatch import Dispatcher
from .sender import OPERATION_TIMEOUT, Sender, target
from .subscription import Handler, Subscription, new_subscription

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.pubsub")

#: Channels starting with this prefix are internal (sync messages); users cannot
#: write "~", so they never collide with a user channel.
INTERNAL_PREFIX = "~"


class PubSubManager:
    """Publish JSON messages to every node of the app and run local handlers.

    One listener per process and backend: messages go from the backend into a
    bounded buffer (``PUBSUB["BUFFER_SIZE"]``) and one dispatcher thread runs the
    handlers in arrival order, so a publisher's messages on a channel are handled
    in the order it sent them. A full buffer drops the newest message, counts it
    in ``dropped``, logs it and tells every ``on_gap`` callback.

    Pub/sub is async-native; the sync methods hand work to the process's pub/sub
    event loop and never start a loop per call.
    """

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        self.backend = load_backend(app, "PUBSUB", PubSubBackend)
        self.max_bytes: int = app.settings["MESSAGE_MAX_BYTES"]
        self.buffer_size: int = app.settings.pubsub["BUFFER_SIZE"]
        self._dispatcher = Dispatcher(
            app,
            buffer_size=self.buffer_size,
            wake_per_read=self.backend.reads_in_batches,
            # the largest payload plus room for the envelope and its names
            max_frame=self.max_bytes + 65_536,
        )
        self.backend.on_message = self._dispatcher.on_message
        self.backend.on_gap = self._dispatcher.on_gap
        self.backend.on_read_done = self._dispatcher.on_read_done
        self._sender = Sender(app.name, app.node_id, self.backend)
        # the dispatcher's subscriptions (the same dict; tests read it here)
        self._subs = self._dispatcher.subs
        self._valid: set[str] = set()
        self._wires: dict[str, str] = {}
        self._lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = False
        self._node_id = app.node_id

    def __repr__(self) -> str:
        return f"<PubSubManager app={self.app.name!r} backend={self.backend!r}>"

    @property
    def node_id(self) -> str:
        return self._node_id

    @property
    def dropped(self) -> int:
        """Messages dropped because the local buffer (``BUFFER_SIZE``) was full."""
        return self._dispatcher.dropped

    @property
    def rejected(self) -> int:
        """Malformed messages received and skipped (counted, logged)."""
        return self._dispatcher.rejected

    @property
    def max_frame(self) -> int | None:
        """The largest frame this node accepts from the broker, in bytes."""
        return self._dispatcher.max_frame

    @property
    def dispatcher(self) -> Dispatcher:
        """The :class:`~mega_cluster.pubsub.dispatch.Dispatcher` this manager owns
        (the testing kit runs its handlers in the test's thread)."""
        return self._dispatcher

    @property
    def _pending(self) -> dict[Any, Any]:
        # Read by the debounce tests: the dispatcher's pending debounced calls.
        return self._dispatcher.pending

    # lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the listener and dispatcher; idempotent.

        Raises ``BackendUnavailable`` when the broker cannot be reached.
        """
        with self._lock:
            if self._started:
                return
            loop = runtime.background_loop()
            runtime.run_sync(loop, self.backend.connect(), OPERATION_TIMEOUT)
            self._loop = loop
            self._start_dispatcher(loop)

    async def astart(self) -> None:
        """Like :meth:`start`; in the main thread the listener is a task of the
        running loop (ASGI lifespan), elsewhere it uses the background loop."""
        if self._started:
            return
        if threading.current_thread() is not threading.main_thread():
            await asyncio.to_thread(self.start)
            return
        with self._lock:
            if self._started:
                return
            self._started = True  # claim before awaiting: one starter only
        try:
            await self.backend.connect()
        except BaseException:
            self._started = False
            raise
        self._loop = asyncio.get_running_loop()
        self._start_dispatcher(self._loop)

    def _start_dispatcher(self, loop: asyncio.AbstractEventLoop) -> None:
        self._node_id = self._sender.node_id = self.app.node_id
        self._dispatcher.start(loop, self._node_id)
        self._started = True

    def stop(self) -> None:
        """Stop the listener, cancel pending debounces, close connections."""
        with self._lock:
            if not self._started:
                return
            self._started = False
            self._stop_dispatcher()
            loop, self._loop = self._loop, None
            if loop is None or loop.is_closed():
                return
            if runtime.in_loop_thread(loop):
                loop.create_task(self.backend.close())
                return
            try:
                runtime.run_sync(loop, self.backend.close(), OPERATION_TIMEOUT)
            except Exception:  # stopping must not fail
                logger.exception("closing the pub/sub backend failed")

    async def astop(self) -> None:
        loop = self._loop
        if loop is not None and runtime.in_loop_thread(loop):
            with self._lock:
                if not self._started:
                    return
                self._started = False
                self._loop = None
            await asyncio.to_thread(self._stop_dispatcher)
            await self.backend.close()
        else:
            await asyncio.to_thread(self.stop)

    def _stop_dispatcher(self) -> None:
        self._sender.tally.flush()
        self._dispatcher.stop()

    def _ensure_started(self) -> asyncio.AbstractEventLoop:
        if not self._started:
            self.start()
        assert self._loop is not None
        return self._loop

    async def _aensure_started(self) -> asyncio.AbstractEventLoop:
        if not self._started:
            await self.astart()
        # another task is starting it (rare; a short poll is enough)
        while self._loop is None and self._started:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if self._loop is None:
            raise RuntimeError("the pub/sub manager failed to start")
        return self._loop

    # subscribing -------------------------------------------------------------------

    def _wire(self, channel: str) -> str:
        wire = self._wires.get(channel)
        if wire is None:
            wire = self._wires[channel] = self.backend.wire_channel(channel)
        return wire

    def subscribe(
        self,
        channel: str,
        handler: Handler,
        *,
        debounce: float = 0,
        debounce_key: Callable[[Any], Hashable] | None = None,
        on_gap: Callable[[], Any] | None = None,
        max_wait: float | None = None,
    ) -> Callable[[], bool]:
        """Run ``handler(payload)`` for every message on ``channel``.

        The subscription is live at the broker when this returns. The same handler
        subscribed twice is called once. ``debounce`` (seconds) delays calls to the
        trailing edge: equal payloads (compared as canonical JSON, so key order does
        not matter) arriving within ``debounce`` of each other become one call; with
        ``debounce_key`` messages with the same key coalesce and the latest wins.
        ``max_wait`` (seconds, default ``10 * debounce``) bounds the delay: a burst
        that keeps coming is still handled at least once per ``max_wait`` after
        its first message.
        ``on_gap()`` is called when messages may have been lost (reconnect after
        an outage, buffer overflow). Returns a callable that unsubscribes.
        """
        sub = new_subscription(
            channel, handler, debounce, debounce_key, on_gap, max_wait
        )
        return self.subscribe_internal(sub)

    # internal API (sync messages) ---------------------------------------------------
    #
    # Sync messages ride on this manager with channels users cannot name (prefix
    # INTERNAL_PREFIX), raw envelopes (sender node, sequence number) and their own
    # JSON encoding: these two methods skip the name check and the encoding.

    def subscribe_internal(self, sub: Subscription) -> Callable[[], bool]:
        """Register a prepared subscription (no name check) and subscribe its
        channel at the broker; returns the unsubscribe callable. Internal API."""
        loop = self._ensure_started()
        sub, new = self._dispatcher.add(sub)
        if new:
            try:
                runtime.run_sync(
                    loop,
                    self.backend.subscribe(self._wire(sub.channel)),
                    OPERATION_TIMEOUT,
                )
            except BaseException:
                if self._dispatcher.remove(sub):
                    self._forget_wire(sub.channel)
                raise
        return partial(self._unsubscribe_sub, sub)

    async def asubscribe(
        self,
        channel: str,
        handler: Handler,
        *,
        debounce: float = 0,
        debounce_key: Callable[[Any], Hashable] | None = None,
        on_gap: Callable[[], Any] | None = None,
        max_wait: float | None = None,
    ) -> Callable[[], bool]:
        """Async twin of :meth:`subscribe`."""
        sub = new_subscription(
            channel, handler, debounce, debounce_key, on_gap, max_wait
        )
        return await self._subscribe_async(sub)

    async def _subscribe_async(self, sub: Subscription) -> Callable[[], bool]:
        loop = await self._aensure_started()
        sub, new = self._dispatcher.add(sub)
        if new:
            try:
                await runtime.run_async(
                    loop, self.backend.subscribe(self._wire(sub.channel))
                )
            except BaseException:
                if self._dispatcher.remove(sub):
                    self._forget_wire(sub.channel)
                raise
        return partial(self._unsubscribe_sub, sub)

    def _forget_wire(self, channel: str) -> None:
        """Undo a failed broker subscription (from any thread or loop): nothing of
        it may stay recorded, or every reconnect would replay it and fail again."""
        self._backend_unsubscribe(channel)
        self.backend.channels.discard(self._wire(channel))

    def _unsubscribe_sub(self, sub: Subscription) -> bool:
        was_active = sub.active
        if self._dispatcher.remove(sub):
            self._backend_unsubscribe(sub.channel)
        return was_active

    def _backend_unsubscribe(self, channel: str) -> None:
        loop = self._loop
        if loop is None or not self._started:
            return
        coro = self.backend.unsubscribe(self._wire(channel))
        if runtime.in_loop_thread(loop):
            loop.create_task(coro)
            return
        try:
            runtime.run_sync(loop, coro, OPERATION_TIMEOUT)
        except Exception:  # locally unsubscribed already
            logger.warning("broker unsubscribe of %s failed", channel, exc_info=True)

    def unsubscribe(self, channel: str, handler: Handler) -> bool:
        """Remove ``handler`` from ``channel``; False when it was not subscribed."""
        validate_name(channel)
        sub = self._dispatcher.find(channel, handler)
        return False if sub is None else self._unsubscribe_sub(sub)

    async def aunsubscribe(self, channel: str, handler: Handler) -> bool:
        """Async twin of :meth:`unsubscribe`."""
        validate_name(channel)
        sub = self._dispatcher.find(channel, handler)
        if sub is None:
            return False
        if self._dispatcher.remove(sub) and self._loop is not None and self._started:
            await runtime.run_async(
                self._loop, self.backend.unsubscribe(self._wire(channel))
            )
        return True

    def subscriptions(self) -> dict[str, int]:
        """Channel -> number of local handlers (user channels only)."""
        return {
            channel: len(subs)
            for channel, subs in self._dispatcher.subs.items()
            if not channel.startswith(INTERNAL_PREFIX)
        }

    # publishing --------------------------------------------------------------------

    def publish(
        self,
        channel: str,
        message: Any,
        *,
        skip_self: bool = True,
        only_self: bool = False,
    ) -> None:
        """Send ``message`` (JSON) to the handlers of ``channel`` on every node.

        ``skip_self`` (default) leaves out this node's handlers; ``only_self``
        reaches only them and wins over ``skip_self``. Raises ``InvalidName`` for a
        bad channel, ``MessageEncodeError`` for a payload that is not JSON or too
        big (nothing sent) and ``BackendUnavailable`` when the broker cannot take
        the message. Delivery is at most once (docs/delivery-semantics.md).
        """
        self._validate(channel)
        payload = envelope.encode_payload(message, self.max_bytes)
        self.send_internal(channel, payload, target(skip_self, only_self))

    def _validate(self, channel: str) -> None:
        # a regex per message was a tenth of the cost of publishing a small one
        if type(channel) is not str or channel not in self._valid:
            validate_name(channel)
            if len(self._valid) < 10_000:  # channel names are caller-chosen
                self._valid.add(channel)

    def send_internal(self, channel: str, payload_json: str, to: str) -> None:
        """Send an encoded payload to ``to`` (``envelope.TO_*``) without the name
        check; numbered per channel like :meth:`publish`. Internal API."""
        loop = self._ensure_started()
        self._sender.send(loop, self._wire(channel), channel, payload_json, to)

    async def apublish(
        self,
        channel: str,
        message: Any,
        *,
        skip_self: bool = True,
        only_self: bool = False,
    ) -> None:
        """Async twin of :meth:`publish`."""
        self._validate(channel)
        payload = envelope.encode_payload(message, self.max_bytes)
        to = target(skip_self, only_self)
        loop = self._loop
        if loop is not None and self._started and runtime.running_loop() is loop:
            await self._asend_on_loop(channel, payload, to)  # one coroutine less
        else:
            await self._asend(channel, payload, to)

    async def _asend(self, channel: str, payload_json: str, to: str) -> None:
        loop = self._loop
        if loop is None or not self._started:
            loop = await self._aensure_started()
        if (
            runtime.running_loop() is loop
        ):  # the common case: one coroutine less per call
            await self._asend_on_loop(channel, payload_json, to)
        else:
            await runtime.run_async(
                loop, self._asend_on_loop(channel, payload_json, to)
            )

    async def _asend_on_loop(self, channel: str, payload_json: str, to: str) -> None:
        await self._sender.asend(self._wire(channel), channel, payload_json, to)
