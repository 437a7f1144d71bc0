"""The Celery backend's consumer: an embedded Celery worker (thread pool) on the
subscribed channels' queues, and what the task (:mod:`.task`) has it do with each
message: wait for a slot and the ``idle()`` gate, claim the event's row (or create
it from a first message; a lean one runs without, :mod:`.lean`), run the attempt
(:mod:`~mega_cluster.events.attempts`), record the outcome (a retry is a countdown
message). The consumer owns its retry loops: a store write or a message waits out
an outage while the message stays unacknowledged, and goes back to the broker at
shutdown. A side thread runs the upkeep: leases, lean rows and tallies, the
``RETENTION`` prune, lost events sent again (``RESEND_AFTER``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import close_old_connections, connections

from ....exceptions import BackendUnavailable, ConfigurationError
from ...attempts import (
    Attempt,
    HandlerRunner,
    finish_attempt,
    keep_trying,
    log_dead,
    log_start,
    report_spent,
    store_writer,
    upkeep_interval,
)
from ...context import ConsumerConfig, EventContext, Subscription
from ..base import ClaimedEvent
from . import task
from .inbound import Slot, checked
from .lean import LeanEntry, Outcomes
from .protocol import TALLY_EVERY, is_lean

if TYPE_CHECKING:
    from .backend import CeleryEventBackend

logger = logging.getLogger("mega_cluster.events.celery")

#: Threads of the embedded worker for a channel with unlimited concurrency.
UNLIMITED_THREADS = 32
IDLE_RECHECK = 0.05  #: how often a closed ``idle()`` gate is asked again (s)
#: The consumer running this process's embedded Celery worker (one at most).
_embedded: CeleryConsumer | None = None


class CeleryConsumer:
    """Runs an embedded Celery worker (thread pool) on the subscribed channels'
    queues; the task calls :meth:`deliver` for each message."""

    def __init__(self, backend: CeleryEventBackend, config: ConsumerConfig) -> None:
        self.backend = backend
        self.store = backend.store
        self.broker = backend.broker
        self.book = backend.book
        self.config = config
        self.app = backend.app
        self.lease = config.lease
        self.runner = HandlerRunner(f"mc-events-{config.app_name}")
        self._subs: dict[str, Subscription] = {}
        self._slots: dict[str, threading.BoundedSemaphore | None] = {}
        self._running: dict[str, ClaimedEvent] = {}
        #: Contexts of the attempts running here (a drain sets them cancelled).
        self._contexts: dict[str, EventContext] = {}
        self._lock = threading.Lock()
        self._worker: Any = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        #: Store writes wait out an outage while the message stays unacknowledged;
        #: at shutdown the message goes back to the broker, not acked without its row.
        self._write = store_writer(self._stopping, _requeue)
        self._failed = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        task.attach(self.config.app_name, self)
        threading.Thread(
            target=self._upkeep,
            name=f"mc-events-lease-{self.config.app_name}",
            daemon=True,
        ).start()

    # upkeep -----------------------------------------------------------------------

    def _upkeep(self) -> None:
        """Chores, each at its own interval: renew the leases of running events,
        tally lean successes, prune old succeeded ones (``RETENTION``), send lost
        events again (``RESEND_AFTER``)."""
        retention = self.config.retention
        resend_after = self.backend.resend_after
        chores: list[tuple[str, float, Callable[[], Any]]] = [
            ("renewing event leases", self.lease / 3, self._renew),
            ("tallying lean successes", TALLY_EVERY, self.book.flush),
        ]
        if retention is not None:
            chores.append(
                (
                    "pruning succeeded events",
                    upkeep_interval(retention),
                    lambda: self.store.prune(retention),
                )
            )
        if resend_after is not None:
            every = upkeep_interval(resend_after)
            chores.append(
                ("sending lost events again", every, lambda: self._resend_lost(every))
            )
        due = [time.monotonic() + every for _, every, _ in chores]
        try:
            while not self._stopping.wait(min(every for _, every, _ in chores)):
                for i, (what, every, chore) in enumerate(chores):
                    now = time.monotonic()
                    if now >= due[i]:
                        due[i] = now + every
                        try:
                            chore()
                        except Exception:
                            logger.exception("%s failed", what)
        finally:
            connections.close_all()

    def _renew(self) -> None:
        with self._lock:
            events = list(self._running.values())
        events += self.book.give_rows(self.lease)
        if events:
            self.store.renew(events, lease=self.lease)

    def _resend_lost(self, every: float) -> None:
        # One consuming node per channel and round (the others skip it).
        with self._lock:
            channels = list(self._subs)
        locks = self.app.lock_manager
        for channel in channels:
            try:
                lock = locks.try_acquire(f"mc-events-resend-{channel}", ttl=every)
                if lock is None:
                    continue
                try:
                    self.backend.resend_lost(channel)
                finally:
                    lock.release()
            except Exception:
                logger.exception(
                    "sending lost events of channel %s again failed", channel
                )

    # subscriptions and the embedded worker ----------------------------------------

    def add(self, sub: Subscription) -> None:
        if not self.config.takes(sub.channel):
            return
        concurrency = self.config.concurrency(sub)
        with self._lock:
            self._subs[sub.channel] = sub
            self._slots[sub.channel] = (
                threading.BoundedSemaphore(concurrency) if concurrency else None
            )
            worker = self._worker
        if worker is None:
            self._start_worker()
        else:
            queue = self.broker.queue(sub.channel)
            self._in_worker_loop(
                lambda: worker.consumer.add_task_queue(
                    queue.name, queue_arguments=queue.queue_arguments
                )
            )

    def remove(self, channel: str) -> None:
        with self._lock:
            self._subs.pop(channel, None)
            worker = self._worker
        if worker is not None:
            name = self.broker.queue_name(channel)
            self._in_worker_loop(lambda: worker.consumer.cancel_task_queue(name))

    def _in_worker_loop(self, fn: Callable[[], Any]) -> None:
        done = threading.Event()

        def call() -> None:
            try:
                fn()
            finally:
                done.set()

        self._worker.consumer.controller.hub.call_soon(call)
        done.wait(10)

    def _start_worker(self) -> None:
        # Celery keeps the worker's event loop (kombu's hub) in a module global, so
        # two embedded workers in one process would share it.
        global _embedded
        if _embedded is not None and _embedded is not self:
            raise ConfigurationError(
                f"cluster app {self.config.app_name!r} cannot consume with the Celery "
                f"backend: app {_embedded.config.app_name!r} already runs this "
                "process's embedded Celery worker. Consume each Celery-backed app in "
                "its own process (runworker --app NAME)."
            )
        _embedded = self
        celery_app = self.broker.celery
        with self._lock:
            channels = list(self._subs)
            threads = sum(
                self.config.concurrency(s) or UNLIMITED_THREADS
                for s in self._subs.values()
            )
        for channel in channels:
            celery_app.amqp.queues.select_add(self.broker.queue(channel))
        self._worker, self._ready = task.build_worker(
            celery_app,
            hostname=f"mc-{self.config.app_name}-{self.app.node_id}@mega-cluster",
            queues=[self.broker.queue_name(c) for c in channels],
            concurrency=max(1, threads),
        )
        self._thread = threading.Thread(
            target=self._run_worker,
            name=f"mc-events-celery-{self.config.app_name}",
            daemon=True,
        )
        self._thread.start()
        if not self._ready.wait(30) or self.error is not None:
            raise BackendUnavailable(
                f"the embedded Celery worker did not start: {self.error or 'timeout'}"
            ) from self.error

    def _run_worker(self) -> None:
        try:
            self._worker.start()
        except BaseException as exc:
            if not self._stopping.is_set():
                logger.critical("embedded Celery worker failed", exc_info=exc)
                self.error = exc
                self._failed.set()
                self._ready.set()

    def wait_failed(self, timeout: float | None) -> BaseException | None:
        self._failed.wait(timeout)
        return self.error

    def stop(self, drain_timeout: float) -> None:
        self._stopping.set()
        # Running handlers learn at once that the node is draining.
        with self._lock:
            contexts = list(self._contexts.values())
        for ctx in contexts:
            ctx.cancelled.set()
        task.detach(self.config.app_name, self)
        if self._worker is not None and self._thread is not None:
            # Warm shutdown: running tasks finish; reserved and countdown messages
            # are unacked and go back to the broker. It must run in the worker's
            # own thread: its AMQP connection is not thread-safe.
            from celery.exceptions import WorkerShutdown

            def shutdown() -> None:
                raise WorkerShutdown(0)

            hub = getattr(self._worker.consumer.controller, "hub", None)
            if hub is not None:
                hub.call_soon(shutdown)
            else:
                from celery.worker import state

                state.should_stop = 0
            self._thread.join(drain_timeout + 10)
        global _embedded
        if _embedded is self:
            _embedded = None
        self.runner.close()

    # the task's work --------------------------------------------------------------

    def deliver(
        self, event_id: str, channel: str, first: Any = None, redelivered: bool = False
    ) -> None:
        """Run one attempt of ``event_id`` (called by the task, in a worker thread);
        ``first`` is the event a first message carries (see :mod:`.protocol`);
        ``redelivered``: the broker says a consumer had the message before."""
        drop, first = checked(
            self.store, self._write, self.config.app_name, event_id, channel, first
        )
        if drop:
            return
        with self._lock:
            sub = self._subs.get(channel)
            slot = self._slots.get(channel)
        lean = is_lean(first)
        if sub is None:
            logger.warning(
                "event %s: channel %s is not consumed here", event_id, channel
            )
            self._send(channel, event_id, 1.0, first if lean else None)
            return
        held = Slot(slot)
        try:
            self._wait_idle(sub)
            if lean and not redelivered:
                event = ClaimedEvent(
                    id=event_id,
                    channel=channel,
                    payload=first[0],
                    attempt=1,
                    max_retries=first[1],
                    timeout=first[2],
                )
                entry = self.book.begin(event)
                try:
                    self._attempt(sub, event, held, entry)
                finally:
                    self.book.end(event_id)
                return
            claimed = self._write(
                event_id,
                channel,
                self.store.claim_one,
                event_id,
                lease=self.lease,
                first=None if first is None else (channel, first[0], first[1:]),
                lost=lean,
            )
            if claimed is None:
                return
            if isinstance(claimed, float):
                # Running elsewhere, or not due yet: look again when it may be.
                self._send(channel, event_id, claimed + 0.05)
                return
            with self._lock:
                self._running[claimed.id] = claimed
            try:
                self._attempt(sub, claimed, held)
            finally:
                with self._lock:
                    self._running.pop(claimed.id, None)
        finally:
            held.release()
            close_old_connections()

    def _send(
        self,
        channel: str,
        event_id: str,
        countdown: float | None = None,
        carried: list[Any] | None = None,
    ) -> None:
        """A message for an event this consumer holds (a retry, a look later),
        sent again while the broker refuses it: its row already says what comes
        next, so a send given up would strand the event. Meanwhile the consumer
        keeps the slot and its own unacknowledged message, which goes back to the
        broker if the consumer stops first. ``countdown`` is measured from the
        first try; ``carried``: the event a lean message carries."""
        due = time.monotonic() + (countdown or 0)
        try:
            keep_trying(
                self._stopping,
                "the Celery broker refuses its message",
                event_id,
                channel,
                lambda: self.broker.send(
                    channel, event_id, due - time.monotonic(), carried
                ),
                errors=(BackendUnavailable,),
            )
        except BackendUnavailable as exc:
            from celery.exceptions import Reject

            raise Reject(
                f"event {event_id}: broker unreachable at shutdown", requeue=True
            ) from exc

    def _wait_idle(self, sub: Subscription) -> None:
        idle = sub.idle
        while idle is not None and not self._stopping.is_set():
            if self.runner.call(idle):
                return
            time.sleep(IDLE_RECHECK)

    def _attempt(
        self,
        sub: Subscription,
        event: ClaimedEvent,
        held: Slot,
        lean: LeanEntry | None = None,
    ) -> None:
        attempt = Attempt.of(sub, event)
        config = self.config
        error = attempt.reject(config.app_name, "event", config.max_bytes)
        if error is not None:
            # A lean event has no row yet: the dead letter is written as one.
            Outcomes(self.store, self.book, self._write, self._send, lean).bury(
                event, error
            )
            log_dead(event, error)
            report_spent(attempt, error)
            return
        error = attempt.spent()
        if error is not None:
            self._write(event.id, event.channel, self.store.bury, event, error)
            log_dead(event, error)
            report_spent(attempt, error)
            return
        ctx = attempt.ctx
        # A timeout frees the slot; this thread (the message, the lease) stays
        # with the event until the handler returned.
        attempt.on_timeout = held.release
        with self._lock:
            self._contexts[event.id] = ctx
        if self._stopping.is_set():
            ctx.cancelled.set()
        log_start(event)
        try:
            outcome = self.runner.run(attempt)
        finally:
            with self._lock:
                self._contexts.pop(event.id, None)
        finish_attempt(
            # Where a lean event's outcome goes is decided once its handler returned.
            Outcomes(self.store, self.book, self._write, self._send, lean),
            self.config.app_name,
            attempt,
            outcome,
            self.config.retry_base,
            self.config.retry_cap,
        )


def _requeue(exc: BaseException) -> BaseException:
    from celery.exceptions import Reject

    return Reject(f"event store unreachable at shutdown: {exc}", requeue=True)
