"""The :class:`Dispatcher` a :class:`~mega_cluster.pubsub.PubSubManager` owns.

The backend pushes raw envelopes into a bounded local buffer (from the event loop,
or the publishing thread for ``memory``) through the dispatcher's ``on_message``;
one dispatcher thread per manager decodes them, applies skip-self/only-self,
debounces and runs the handlers in arrival order, isolating each one.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Hashable
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections

from .. import metrics
from . import envelope, runtime
from .subscription import Handler, Subscription

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.pubsub")

#: Database connections are checked at least every this many messages.
MAX_BATCH = 100


class Dispatcher:
    """Buffer, dispatcher thread, debounce and gap reporting of one manager.

    The manager registers subscriptions with :meth:`add` and :meth:`remove`, hands
    the backend's callbacks
    :meth:`on_message`, :meth:`on_read_done` and :meth:`on_gap`, and calls
    :meth:`start` / :meth:`stop` with its own start and stop.
    """

    def __init__(
        self,
        app: ClusterApp,
        *,
        buffer_size: int,
        wake_per_read: bool,
        max_frame: int | None = None,
    ):
        self.app = app
        self.buffer_size = buffer_size
        #: messages dropped because the local buffer was full.
        self.dropped = 0
        #: malformed messages received and skipped (counted, logged).
        self.rejected = 0
        #: a received frame bigger than this is malformed (None: no limit).
        self.max_frame = max_frame
        #: channel -> its subscriptions, in subscription order (tuples replaced
        #: under _subs_lock, read by the dispatcher thread without it).
        self.subs: dict[str, tuple[Subscription, ...]] = {}
        self._subs_lock = threading.Lock()
        #: debounced calls waiting for their deadline: (sub id, key) -> call.
        #: (due, subscription, envelope, latest due: max_wait after the first)
        self.pending: dict[
            tuple[int, Hashable], tuple[float, Subscription, Any, float]
        ] = {}
        # the buffer: appended on the loop, taken by the dispatcher thread (deque
        # operations are atomic); BUFFER_SIZE is our own check
        self._inbox: collections.deque[bytes] = collections.deque()
        self._wakeups: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._wake_scheduled = False
        self._wake_per_read = wake_per_read
        self._counters: dict[str, Callable[[float], None]] = {}
        self._delivered: dict[str, int] = {}
        self._gap_pending = False
        self._stopping = False
        self._node_id = app.node_id
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, loop: asyncio.AbstractEventLoop, node_id: str) -> None:
        """Start the dispatcher thread; async handlers are awaited on ``loop``."""
        self._loop = loop
        self._node_id = node_id
        self._stopping = False
        self._wake_scheduled = False  # a call_soon lost with an earlier loop
        self._thread = threading.Thread(
            target=self._dispatch_loop,
            name=f"mega_cluster-pubsub-{self.app.name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (up to 10 s) and cancel the pending debounced calls."""
        self._stopping = True
        self._wake()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        self.pending.clear()
        self._loop = None

    def is_alive(self) -> bool:
        """Whether the dispatcher thread runs."""
        return self._thread is not None and self._thread.is_alive()

    # the subscriptions ---------------------------------------------------------------

    def add(self, sub: Subscription) -> tuple[Subscription, bool]:
        """Register ``sub``; returns the live subscription (an equal handler already
        there wins) and whether the channel is new (needs a broker subscription)."""
        with self._subs_lock:
            current = self.subs.get(sub.channel, ())
            for existing in current:
                if existing.handler == sub.handler:
                    return existing, False
            self.subs[sub.channel] = (*current, sub)
            return sub, not current

    def remove(self, sub: Subscription) -> bool:
        """Forget ``sub``; True when it was the channel's last subscription."""
        with self._subs_lock:
            current = self.subs.get(sub.channel, ())
            if sub not in current:
                return False
            sub.active = False
            rest = tuple(s for s in current if s is not sub)
            if rest:
                self.subs[sub.channel] = rest
                return False
            del self.subs[sub.channel]
            return True

    def find(self, channel: str, handler: Handler) -> Subscription | None:
        """The subscription of ``handler`` on ``channel``, if any."""
        for sub in self.subs.get(channel, ()):
            if sub.handler == handler:
                return sub
        return None

    # receiving (loop side) -----------------------------------------------------------

    def on_message(self, wire: str, data: bytes) -> None:
        """The backend's ``on_message``: buffer one raw envelope."""
        inbox = self._inbox
        if len(inbox) < self.buffer_size:
            inbox.append(data)
            if self._wake_scheduled or self._wake_per_read:
                return
            self._wake_scheduled = True
            loop = self._loop
            if loop is not None and runtime.running_loop() is loop:
                # One wake-up per loop iteration, not per message: the dispatcher
                # then takes the whole burst in one go instead of fighting the
                # loop thread for the GIL at every message.
                loop.call_soon(self._wake_now)
            else:
                self._wake_now()
            return
        self.dropped += 1
        self._gap_pending = True  # the busy dispatcher sees it after this batch
        # Still undecoded here: the channel is not known.
        metrics.inc("messages_dropped", app=self.app.name, channel="")
        if self.dropped == 1 or self.dropped % 1000 == 0:
            logger.warning(
                "pub/sub buffer of app %s on node %s is full (%d messages): "
                "%d message(s) dropped so far; raise PUBSUB BUFFER_SIZE or make "
                "handlers faster",
                self.app.name,
                self._node_id,
                self.buffer_size,
                self.dropped,
            )

    def _wake_now(self) -> None:
        self._wake_scheduled = False
        self._wakeups.put(None)

    def on_read_done(self) -> None:
        """The backend's ``on_read_done``."""
        # the backend delivered a whole read in one step: wake the dispatcher now
        # (no loop iteration in between, which cost two epoll_wait calls per
        # message when messages come one at a time)
        if self._inbox:
            self._wakeups.put(None)

    def on_gap(self) -> None:
        """The backend's ``on_gap``: messages may have been lost."""
        self._gap_pending = True
        self._wake()

    def _wake(self) -> None:
        self._wakeups.put(None)

    # dispatching (dispatcher thread) -------------------------------------------------

    def _dispatch_loop(self) -> None:
        inbox = self._inbox
        popleft = inbox.popleft
        wait = self._wakeups.get
        while not self._stopping:
            if not inbox and not self._gap_pending:
                try:
                    wait(timeout=self._next_deadline())
                except queue.Empty:
                    pass
                if self._stopping:
                    break
                if not inbox and not self._gap_pending and not self.pending:
                    continue  # a wake-up whose messages an earlier batch took
            # As around a Django request: before and after the handlers of each
            # batch of at most MAX_BATCH messages.
            self._close_connections()
            for _ in range(MAX_BATCH):
                if not inbox or self._stopping:
                    break
                try:
                    self._dispatch(popleft())
                except Exception:
                    # handlers are isolated in _call: a bug, never a dead listener
                    logger.exception(
                        "pub/sub dispatcher error (node %s)", self._node_id
                    )
            try:
                if self._delivered:
                    self._count_delivered()
                if self.pending:
                    self._fire_due()
                if self._gap_pending:
                    self._gap_pending = False
                    self._fire_gaps()
            except Exception:
                logger.exception("pub/sub dispatcher error (node %s)", self._node_id)
            self._close_connections()
        self.pending.clear()

    def _close_connections(self) -> None:
        try:
            close_old_connections()
        except Exception:
            logger.exception("closing old database connections failed")

    def _count_delivered(self) -> None:
        # once per batch and channel: a labelled prometheus inc() per message
        # cost as much as decoding the message
        delivered, self._delivered = self._delivered, {}
        for channel, amount in delivered.items():
            count = self._counters.get(channel)
            if count is None:
                count = metrics.counter(
                    "messages_delivered", app=self.app.name, channel=channel
                )
                if len(self._counters) < 10_000:  # channel names are caller-chosen
                    self._counters[channel] = count
            count(amount)

    def _dispatch(self, data: bytes) -> None:
        try:
            env = envelope.decode(data, self.max_frame)
        except (ValueError, KeyError, TypeError) as exc:
            self._reject(f"{type(exc).__name__}: {exc}", data)
            return
        if env.app != self.app.name:  # wire channels are per app: not ours
            self._reject(f"an envelope of app {env.app[:60]!r}", data)
            return
        if env.to == envelope.TO_OTHERS and env.node == self._node_id:
            return
        if env.to == envelope.TO_SELF and env.node != self._node_id:
            return
        subs = self.subs.get(env.channel)
        if not subs:
            return
        delivered = self._delivered
        delivered[env.channel] = delivered.get(env.channel, 0) + 1
        for sub in subs:
            if sub.debounce > 0:
                self._debounce(sub, env)
            else:
                self._call(sub, env)

    def _reject(self, why: str, data: bytes) -> None:
        """Count, log and skip a malformed incoming message."""
        self.rejected += 1
        metrics.inc("messages_rejected", app=self.app.name)
        if self.rejected <= 10 or self.rejected % 1000 == 0:
            logger.warning(
                "node %s skipped a malformed pub/sub message of app %s (%s; %d so "
                "far): %r",
                self._node_id,
                self.app.name,
                why,
                self.rejected,
                data[:120],
            )

    def _debounce(self, sub: Subscription, env: envelope.Envelope) -> None:
        key: Hashable
        if sub.debounce_key is not None:
            try:
                key = sub.debounce_key(env.payload)
                hash(key)
            except Exception:
                logger.exception(
                    "debounce_key failed on channel %s (message %s); calling the "
                    "handler without debounce",
                    env.channel,
                    env.id,
                )
                self._call(sub, env)
                return
        else:
            key = json.dumps(env.payload, sort_keys=True, separators=(",", ":"))
        # trailing edge: every new message moves the deadline and replaces the payload
        # ... but never past max_wait after the burst's first message (a steady
        # stream of equal messages would otherwise never fire)
        now = time.monotonic()
        pending = self.pending.get((sub.id, key))
        latest = pending[3] if pending is not None else now + sub.max_wait
        self.pending[(sub.id, key)] = (
            min(now + sub.debounce, latest),
            sub,
            env,
            latest,
        )

    def _next_deadline(self) -> float | None:
        if not self.pending:
            return None
        first = min(item[0] for item in self.pending.values())
        return max(0.0, first - time.monotonic())

    def _fire_due(self) -> None:
        now = time.monotonic()
        due = sorted(
            (item for item in self.pending.items() if item[1][0] <= now),
            key=lambda item: item[1][0],
        )
        for key, (_, sub, env, _) in due:
            del self.pending[key]
            if sub.active:
                self._call(sub, env)

    def _call(self, sub: Subscription, env: envelope.Envelope) -> None:
        arg = env if sub.raw else env.payload
        try:
            result = sub.handler(arg)
            # isawaitable() is slow on None (ABC checks), and handlers return None
            if result is not None and inspect.isawaitable(result):
                self._await(result)
        except Exception:
            logger.exception(
                "pub/sub handler %r failed on channel %s (node %s, message %s from "
                "node %s)",
                sub.handler,
                env.channel,
                self._node_id,
                env.id,
                env.node,
            )

    def _await(self, awaitable: Any) -> Any:
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the pub/sub loop is gone; async handler not run")

        async def run() -> Any:
            return await awaitable

        coro: Coroutine[Any, Any, Any] = run()
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    # driven delivery (mega_cluster.testing) ----------------------------------------

    def dispatch_now(self, data: bytes) -> None:
        """Run the handlers of one received message in the calling thread.

        What the dispatcher thread does with a message taken from the buffer; the
        testing kit delivers this way, one message at a time, in the order it
        chooses (its nodes' backends never fill the buffer).
        """
        self._dispatch(data)
        if self._delivered:
            self._count_delivered()

    def fire_gaps_now(self) -> None:
        """Run every ``on_gap`` callback in the calling thread (testing kit)."""
        self._fire_gaps()

    def fire_debounced_now(self) -> int:
        """Run every debounced call now, as if each window had closed; how many ran."""
        pending, self.pending = self.pending, {}
        ordered = sorted(pending.values(), key=lambda item: item[0])
        for _, sub, env, _ in ordered:
            if sub.active:
                self._call(sub, env)
        return len(ordered)

    def _fire_gaps(self) -> None:
        for subs in list(self.subs.values()):
            for sub in subs:
                if sub.on_gap is None or not sub.active:
                    continue
                try:
                    result = sub.on_gap()
                    if inspect.isawaitable(result):
                        self._await(result)
                except Exception:
                    logger.exception(
                        "on_gap callback %r of channel %s failed (node %s)",
                        sub.on_gap,
                        sub.channel,
                        self._node_id,
                    )
