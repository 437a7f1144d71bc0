"""What travels between the nodes of a kit cluster, held until the test delivers it.

The kit stands between each node's pub/sub backend and its manager: what a node
sends still goes through its backend (the ``memory`` hub, or Redis/NATS when
the test chose a real backend) and is recorded; what a backend receives is
queued instead of handed to the node's dispatcher thread. ``deliver()`` then
runs the handlers in the test's thread, message by message in arrival order,
through the manager's own dispatch (skip-self, sync message sequence numbers and
gaps, debounce). Sync messages ride on pub/sub, so they are held the same way.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..pubsub import envelope
from ..pubsub.manager import INTERNAL_PREFIX
from ..sync_messages.manager import WIRE_PREFIX

if TYPE_CHECKING:
    from ..registry import ClusterApp

#: Deliveries in one ``deliver()`` call after which it gives up (ping-pong).
MAX_DELIVERIES = 10_000


@dataclass(frozen=True, kw_only=True)
class Message:
    """One message a node sent: ``kind`` is ``"sync"`` (a sync message, ``channel``
    as the plugin or manager named it), ``"pubsub"`` or ``"internal"``
    (mega_cluster's own channels, e.g. plugin enable/disable, near caches)."""

    id: str
    node: str
    channel: str
    kind: str
    payload: Any
    seq: int
    to: str

    def __str__(self) -> str:
        return f"{self.kind} {self.channel!r} from {self.node} #{self.seq}: {self.payload!r}"


def as_message(data: bytes) -> Message:
    env = envelope.decode(data)
    channel, kind = env.channel, "pubsub"
    if channel.startswith(WIRE_PREFIX):
        channel, kind = channel.removeprefix(WIRE_PREFIX), "sync"
    elif channel.startswith(INTERNAL_PREFIX):
        kind = "internal"
    payload, seq = env.payload, env.seq
    if kind == "sync" and type(payload) is dict and "m" in payload:
        # the sync wire payload: the message, its number and origin (outbox)
        seq = payload.get("q", seq)
        node = payload.get("n", env.node)
        payload = payload["m"]
    else:
        node = env.node
    return Message(
        id=env.id,
        node=node,
        channel=channel,
        kind=kind,
        payload=payload,
        seq=seq,
        to=env.to,
    )


def reaches(message: Message, node_id: str) -> bool:
    """Whether the node's dispatcher takes ``message`` (skip-self, only-self)."""
    if message.to == envelope.TO_OTHERS:
        return message.node != node_id
    if message.to == envelope.TO_SELF:
        return message.node == node_id
    return True


@dataclass(eq=False)
class _Arrival:
    node: ClusterApp
    data: bytes | None  # None: a gap (the node was disconnected)
    message: Message | None


@dataclass(eq=False)
class _Sent:
    message: Message
    wire: str
    expected: set[str]
    arrived: set[str] = field(default_factory=set)


class Wire:
    """The message traffic of one kit cluster (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: collections.deque[_Arrival] = collections.deque()
        self.sent: list[Message] = []
        self._sent_by_id: dict[str, _Sent] = {}
        #: node id -> messages its dispatcher ran (in order)
        self.delivered: dict[str, list[Message]] = collections.defaultdict(list)
        #: node id -> messages the kit dropped on their way to it
        self.dropped: dict[str, list[Message]] = collections.defaultdict(list)
        self._drop: dict[str, list[tuple[int, str | None]]] = {}
        self._down: set[str] = set()
        self._nodes: dict[str, ClusterApp] = {}

    # wiring a node ----------------------------------------------------------------

    def attach(self, node: ClusterApp) -> None:
        """Stand between ``node``'s pub/sub backend and its manager (before start)."""
        node_id = node.node_id
        self._nodes[node_id] = node
        # Any: its methods are replaced on this instance only (the kit stands between)
        backend: Any = node.pubsub_manager.backend
        backend.on_message = lambda wire, data: self._arrive(node, data)
        backend.on_gap = lambda: self._gap(node)
        backend.on_read_done = lambda: None
        publish_sync, publish = backend.publish_sync, backend.publish

        def sync_send(wire: str, data: bytes) -> None:
            self._check_up(node, backend)
            self._record(node, wire, data)
            publish_sync(wire, data)

        async def async_send(wire: str, data: bytes) -> None:
            self._check_up(node, backend)
            self._record(node, wire, data)
            await publish(wire, data)

        backend.publish_sync = sync_send
        backend.publish = async_send

    def _check_up(self, node: ClusterApp, backend: Any) -> None:
        if node.node_id in self._down:
            raise backend.unavailable(
                ConnectionError(
                    f"pub/sub of node {node.node_id} is unavailable "
                    "(cluster.unavailable() in the test)"
                )
            )

    def _record(self, node: ClusterApp, wire: str, data: bytes) -> None:
        message = as_message(data)
        expected = {
            other_id
            for other_id, other in self._nodes.items()
            if other_id not in self._down
            and wire in other.pubsub_manager.backend.channels
        }
        with self._lock:
            self.sent.append(message)
            self._sent_by_id[message.id] = _Sent(message, wire, expected)

    # receiving ----------------------------------------------------------------------

    def _arrive(self, node: ClusterApp, data: bytes) -> None:
        node_id = node.node_id
        try:
            message: Message | None = as_message(data)
        except (ValueError, KeyError, TypeError):
            message = None  # the manager logs and skips it
        with self._lock:
            if message is not None:
                sent = self._sent_by_id.get(message.id)
                if sent is not None:
                    sent.arrived.add(node_id)
                if not reaches(message, node_id):
                    return  # skip-self / only-self: its dispatcher would skip it
                if node_id in self._down or self._take_drop(node_id, message):
                    self.dropped[node_id].append(message)
                    return
            self._queue.append(_Arrival(node, data, message))

    def _take_drop(self, node_id: str, message: Message) -> bool:
        rules = self._drop.get(node_id)
        if not rules:
            return False
        for i, (count, channel) in enumerate(rules):
            if channel is None or channel == message.channel:
                if count <= 1:
                    del rules[i]
                else:
                    rules[i] = (count - 1, channel)
                return True
        return False

    def _gap(self, node: ClusterApp) -> None:
        with self._lock:
            self._queue.append(_Arrival(node, None, None))

    # the test's controls ------------------------------------------------------------

    def drop_next(self, node_id: str, count: int, channel: str | None) -> None:
        with self._lock:
            self._drop.setdefault(node_id, []).append((count, channel))

    def set_down(self, node: ClusterApp, down: bool) -> None:
        """Disconnect or reconnect a node's pub/sub (a reconnect reports a gap)."""
        backend = node.pubsub_manager.backend
        with self._lock:
            if down:
                self._down.add(node.node_id)
            else:
                self._down.discard(node.node_id)
        backend.connected = not down
        if not down:
            self._gap(node)

    def pending(self, node_id: str | None = None) -> list[Message]:
        with self._lock:
            return [
                a.message
                for a in self._queue
                if a.message is not None
                and (node_id is None or a.node.node_id == node_id)
                and reaches(a.message, a.node.node_id)
            ]

    def wait_arrivals(self, timeout: float) -> None:
        """Wait until every message sent so far reached every node subscribed to
        its channel when it was sent (instant on ``memory``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                missing = [
                    (sent, sorted(sent.expected - sent.arrived - self._down))
                    for sent in self._sent_by_id.values()
                    if sent.expected - sent.arrived - self._down
                ]
            if not missing:
                return
            if time.monotonic() > deadline:
                lines = [
                    f"  {s.message} -> not yet at {', '.join(n)}" for s, n in missing
                ]
                raise AssertionError(
                    f"deliver(): {len(missing)} message(s) did not reach their nodes "
                    f"within {timeout}s:\n" + "\n".join(lines[:20])
                )
            time.sleep(0.005)

    def deliver(self, *, timeout: float) -> list[tuple[str, Message]]:
        """Run every queued message and gap, and what their handlers send, until
        nothing is left; ``(receiving node id, message)`` per delivery."""
        done: list[tuple[str, Message]] = []
        steps = 0
        while True:
            self.wait_arrivals(timeout)
            with self._lock:
                arrival = self._queue.popleft() if self._queue else None
            if arrival is None:
                fired = sum(
                    node.pubsub_manager.dispatcher.fire_debounced_now()
                    for node in list(self._nodes.values())
                )
                with self._lock:
                    if not self._queue and not fired:
                        return done
                continue
            steps += 1
            if steps > MAX_DELIVERIES:
                raise AssertionError(
                    f"deliver() ran {MAX_DELIVERIES} deliveries and messages keep "
                    "coming: handlers on different nodes answer each other forever?"
                )
            manager = arrival.node.pubsub_manager
            if arrival.data is None:
                manager.dispatcher.fire_gaps_now()
                continue
            manager.dispatcher.dispatch_now(arrival.data)
            message = arrival.message
            if message is not None and reaches(message, arrival.node.node_id):
                node_id = arrival.node.node_id
                with self._lock:
                    self.delivered[node_id].append(message)
                done.append((node_id, message))


class ErrorCapture(logging.Handler):
    """Collects the errors mega_cluster logs for failed handlers in one thread."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.thread = threading.get_ident()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread and record.exc_info:
            self.records.append(record)

    def report(self) -> str:
        formatter = logging.Formatter()
        return "\n\n".join(
            f"{r.getMessage()}\n{formatter.formatException(r.exc_info)}"  # type: ignore[arg-type]
            for r in self.records
        )


def capturing_errors(run: Callable[[], Any], *, raise_errors: bool) -> Any:
    """``run()`` with handler errors collected; ``AssertionError`` listing them."""
    capture = ErrorCapture()
    logger = logging.getLogger("mega_cluster")
    logger.addHandler(capture)
    try:
        result = run()
    finally:
        logger.removeHandler(capture)
    if raise_errors and capture.records:
        raise AssertionError(
            f"{len(capture.records)} handler(s) raised while the kit delivered "
            f"(pass raise_errors=False to allow it):\n\n{capture.report()}"
        )
    return result
