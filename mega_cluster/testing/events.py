"""The kit's event queue: one memory queue per cluster, run by the test.

Every node of a :class:`~mega_cluster.testing.cluster.Cluster` gets a
:class:`ClusterEventBackend`: the ``memory`` backend sharing one store with the
other nodes (an event published on one node can run on another, as with a real
queue), comparing due times with the cluster's :class:`~.clock.Clock`, and with
no consumer thread: :func:`run_events` runs due events in the test's thread, with
the queue's own outcome rules (retries with backoff, dead letters).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..calls import call_sync
from ..events import attempts
from ..events.backends.base import ClaimedEvent, NewEvent
from ..events.backends.memory import MemoryEventBackend, MemoryEventStore
from ..exceptions import BackendUnavailable
from .clock import Clock

if TYPE_CHECKING:
    from ..registry import ClusterApp

#: Dotted path of the kit's event backend (the default ``EVENT_QUEUE`` of its nodes).
BACKEND_PATH = "mega_cluster.testing.events.ClusterEventBackend"


class ManualConsumer:
    """Stands in for the consumer thread: the node "consumes" its subscribed
    channels, but only when the test calls ``cluster.run_events()``."""

    def start(self) -> None:
        pass

    def add(self, sub: Any) -> None:
        pass

    def remove(self, channel: str) -> None:
        pass

    def stop(self, drain_timeout: float) -> None:
        pass

    def wait_failed(self, timeout: float | None) -> BaseException | None:
        return None


class ClusterEventBackend(MemoryEventBackend):
    """The ``memory`` event backend of a kit node (see the module docstring)."""

    clock: Clock | None = None

    def join(self, store: MemoryEventStore, clock: Clock) -> None:
        """Share ``store`` with the other nodes and read time from ``clock``."""
        self.store = store
        self.clock = clock

    def now(self) -> float:
        return self.clock.time() if self.clock is not None else time.time()

    def _rebase(self, when: float) -> float:
        # The queue stamps due times from the wall clock (publish delay, retry
        # backoff): keep the distance from now, measured on the cluster's clock.
        if self.clock is None:
            return when
        return self.clock.time() + (when - time.time())

    def enqueue(self, event: NewEvent) -> str:
        rebased = dataclasses.replace(
            event, available_at=self._rebase(event.available_at)
        )
        return super().enqueue(rebased)

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        super().retry(event, error, available_at=self._rebase(available_at))

    def make_consumer(self, config: Any) -> ManualConsumer:
        return ManualConsumer()


@dataclass(frozen=True, kw_only=True)
class Attempt:
    """One attempt :func:`run_events` ran: where, what, and how it ended.

    ``outcome`` is ``"succeeded"``, ``"retry"`` (``retry_in`` seconds later on the
    cluster's clock) or ``"dead"`` (dead-lettered); ``error`` is the handler's
    exception as ``"Type: message"``, empty on success.
    """

    node: str
    channel: str
    event_id: str
    attempt: int
    payload: Any
    outcome: str
    error: str = ""
    retry_in: float | None = None
    at: float = 0.0


class EventRunner:
    """Runs the due events of a cluster's shared queue on its nodes."""

    def __init__(self, store: MemoryEventStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self.history: list[Attempt] = []
        self._turn = itertools.count()

    def pending(self) -> list[tuple[str, str, float]]:
        """``(event id, channel, due time)`` of every pending event, soonest first."""
        with self.store.lock:
            rows = [
                (rec.event.id, rec.event.channel, rec.available_at)
                for rec in self.store.records.values()
                if rec.status == "pending"
            ]
        return sorted(rows, key=lambda row: row[2])

    def run(
        self,
        nodes: Sequence[ClusterApp],
        *,
        channel: str | None,
        advance: bool,
        limit: int,
    ) -> list[Attempt]:
        ran: list[Attempt] = []
        while len(ran) < limit:
            attempt = self._run_one(nodes, channel)
            if attempt is not None:
                ran.append(attempt)
                continue
            if not advance:
                break
            later = [
                due
                for _, name, due in self.pending()
                if (channel is None or name == channel)
                and due > self.clock.time()
                and _consumers(nodes, name)
            ]
            if not later:
                break
            self.clock.advance_to(min(later))
        else:
            raise AssertionError(
                f"run_events() ran {limit} attempts and events are still due: a "
                "handler that publishes forever? Pass a larger limit= if expected."
            )
        return ran

    def _run_one(
        self, nodes: Sequence[ClusterApp], channel: str | None
    ) -> Attempt | None:
        now = self.clock.time()
        for _, name, due in self.pending():
            if due > now or (channel is not None and name != channel):
                continue
            for node in _rotate(_consumers(nodes, name), next(self._turn)):
                sub = node.event_queue.subscriptions().get(name)
                if sub is None or (sub.idle is not None and not call_sync(sub.idle)):
                    continue
                try:
                    claimed = node.event_queue.backend.claim(name, 1, lease=30.0)
                except BackendUnavailable:
                    continue  # this node cannot reach the queue; another may
                if claimed:
                    return self._attempt(node, sub, claimed[0])
        return None

    def _attempt(self, node: ClusterApp, sub: Any, event: ClaimedEvent) -> Attempt:
        queue = node.event_queue
        payload = json.loads(event.payload)
        run = attempts.Attempt.of(sub, event)
        outcome = attempts.Outcome()
        try:
            call_sync(sub.process, payload, run.ctx)
        except Exception as exc:
            outcome = attempts.Outcome(
                error=f"{type(exc).__name__}: {exc}", exc_info=exc
            )
        delay = attempts.finish_attempt(
            queue.backend,
            node.name,
            run,
            outcome,
            queue.settings["RETRY_BASE"],
            queue.settings["RETRY_CAP"],
        )
        error = outcome.error
        result = Attempt(
            node=node.node_id,
            channel=event.channel,
            event_id=event.id,
            attempt=event.attempt,
            payload=payload,
            outcome="succeeded"
            if error is None
            else "dead"
            if delay is None
            else "retry",
            error=error or "",
            retry_in=delay,
            at=self.clock.time(),
        )
        self.history.append(result)
        return result


def _consumers(nodes: Sequence[ClusterApp], channel: str) -> list[ClusterApp]:
    """The nodes that consume ``channel``: subscribed, consuming, not filtered."""
    found = []
    for node in nodes:
        queue = node.event_queue
        if not queue.consuming or channel not in queue.subscriptions():
            continue
        if queue.only_channels is not None and channel not in queue.only_channels:
            continue
        found.append(node)
    return found


def _rotate(items: list[ClusterApp], turn: int) -> list[ClusterApp]:
    if not items:
        return items
    start = turn % len(items)
    return items[start:] + items[:start]
