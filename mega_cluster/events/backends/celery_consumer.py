"""The Celery backend's consumer: an embedded Celery worker (thread pool) on the
subscribed channels' queues, and what the generic task does with each message.

The task (``celery_task.deliver``) looks this process's consumer up by app name and
calls :meth:`CeleryConsumer.deliver`: wait for a slot and the ``idle()`` gate, claim
the event's row (or create it from a first message), run the handler with its
timeout, record the outcome (a retry is a countdown message). Store writes wait out
an outage while the message stays unacknowledged; at shutdown it goes back to the
broker. A side thread renews the leases of running events, prunes succeeded rows
after ``RETENTION``, sends lost events again (``RESEND_AFTER``), writes the rows
of lean events still running and adds lean successes to the tallies.

A lean message (``BOOKKEEPING = "failures"``) that the broker delivers for the
first time runs without a claim: the event exists only in the message and this
process's memory (:class:`_Lean`) until it needs a row.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import Error as DatabaseError
from django.db import close_old_connections, connections

from ...exceptions import BackendUnavailable, ConfigurationError
from ..attempts import (
    Attempt,
    HandlerRunner,
    RetryingStore,
    finish_attempt,
    log_dead,
    log_start,
    upkeep_interval,
    write_to_store,
)
from ..context import ConsumerConfig, EventContext, Subscription
from .base import ClaimedEvent
from .celery import LEAN, TALLY_EVERY, CeleryEventBackend

logger = logging.getLogger("mega_cluster.events.celery")

#: app name -> consumer of this process (the task looks its handlers up here).
_consumers: dict[str, CeleryConsumer] = {}
#: Threads of the embedded worker for a channel with unlimited concurrency.
UNLIMITED_THREADS = 32
#: How often a closed ``idle()`` gate is asked again (seconds).
IDLE_RECHECK = 0.05
#: The consumer running this process's embedded Celery worker (one at most).
_embedded: CeleryConsumer | None = None


def build_worker(
    celery_app: Any, *, hostname: str, queues: list[str], concurrency: int
) -> tuple[Any, threading.Event]:
    """An embedded Celery worker (not started) with a thread pool on ``queues``, and
    the event it sets once it consumes. Prefetch 1, no heartbeat, mingle or gossip:
    a worker reserves no more than it runs and costs the broker nothing idle."""
    ready = threading.Event()

    class Controller(celery_app.WorkController):
        def on_consumer_ready(self, consumer: Any) -> None:
            ready.set()

    worker = Controller(
        app=celery_app,
        hostname=hostname,
        pool="threads",
        concurrency=concurrency,
        queues=queues,
        loglevel="WARNING",
        ready_callback=None,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        prefetch_multiplier=1,
    )
    return worker, ready


class _Lean:
    """A lean event running here: whether it has a row yet (written by the lease
    renewal when it runs long) and whether its outcome is being written. ``lock``
    orders the two, so the outcome goes to the row if and only if there is one."""

    __slots__ = ("done", "event", "lock", "rowed")

    def __init__(self, event: ClaimedEvent) -> None:
        self.event = event
        self.lock = threading.Lock()
        self.rowed = False
        self.done = False

    def finish(self) -> bool:
        """Mark the attempt finished; whether the event has a row."""
        with self.lock:
            self.done = True
            return self.rowed


class _LeanStore:
    """The outcome of a lean event's attempt, as :func:`finish_attempt` records it:
    to its row if it got one, else a success counted in memory or a row written
    for the failure."""

    def __init__(self, backend: CeleryEventBackend, write: Any, entry: _Lean) -> None:
        self._backend = backend
        self._write = write
        self._rowed = entry.finish()

    def complete(self, event: ClaimedEvent) -> None:
        if self._rowed:
            self._write(event.id, event.channel, self._backend.complete, event)
        else:
            self._backend.count_succeeded(event.channel)

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        write = self._backend.retry if self._rowed else self._backend.lean_retry
        self._write(
            event.id, event.channel, write, event, error, available_at=available_at
        )

    def bury(self, event: ClaimedEvent, error: str) -> None:
        write = self._backend.bury if self._rowed else self._backend.lean_bury
        self._write(event.id, event.channel, write, event, error)


class CeleryConsumer:
    """Runs an embedded Celery worker (thread pool) on the subscribed channels'
    queues; the generic task calls :meth:`deliver` for each message."""

    def __init__(self, backend: CeleryEventBackend, config: ConsumerConfig) -> None:
        self.backend = backend
        self.config = config
        self.app = backend.app
        self.lease = config.lease
        self.runner = HandlerRunner(f"mc-events-{config.app_name}")
        self._subs: dict[str, Subscription] = {}
        self._slots: dict[str, threading.BoundedSemaphore | None] = {}
        self._running: dict[str, ClaimedEvent] = {}
        #: Contexts of the attempts running here (a drain sets them cancelled).
        self._contexts: dict[str, EventContext] = {}
        #: Lean events running here (see :class:`_Lean`).
        self._lean: dict[str, _Lean] = {}
        self._lock = threading.Lock()
        self._worker: Any = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._failed = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> None:
        _consumers[self.config.app_name] = self
        self.backend.consumer_stopping = self._stopping
        self.backend.running_rowless = self._running_rowless
        threading.Thread(
            target=self._renew_leases,
            name=f"mc-events-lease-{self.config.app_name}",
            daemon=True,
        ).start()

    def _renew_leases(self) -> None:
        """Upkeep, each at its own interval: renew the leases of running events,
        prune old succeeded ones (``RETENTION``), send lost events again
        (``RESEND_AFTER``)."""
        retention = self.config.retention
        resend_after = self.backend.resend_after
        chores: list[tuple[str, float, Any]] = [
            ("renewing event leases", self.lease / 3, self._renew),
            ("tallying lean successes", TALLY_EVERY, self.backend.flush_tallies),
        ]
        if retention is not None:
            chores.append(
                (
                    "pruning succeeded events",
                    upkeep_interval(retention),
                    lambda: self.backend.prune(retention),
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
            lean = list(self._lean.values())
        for entry in lean:
            # Still running at a renewal: a lean event gets its row, so a message
            # redelivered meanwhile (Redis' visibility timeout) finds it running
            # under a lease, and other nodes' stats() count it.
            with entry.lock:
                if entry.done:
                    continue
                if not entry.rowed:
                    self.backend.lean_row(entry.event, "running", lease=self.lease)
                    entry.rowed = True
                    continue
            events.append(entry.event)
        if events:
            self.backend.renew(events, lease=self.lease)

    def _running_rowless(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for entry in self._lean.values():
                if not entry.rowed and not entry.done:
                    channel = entry.event.channel
                    counts[channel] = counts.get(channel, 0) + 1
        return counts

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
            self._in_worker_loop(
                lambda: worker.consumer.add_task_queue(
                    self.backend.queue_name(sub.channel),
                    queue_arguments=self.backend.broker_queue(
                        sub.channel
                    ).queue_arguments,
                )
            )

    def remove(self, channel: str) -> None:
        with self._lock:
            self._subs.pop(channel, None)
            worker = self._worker
        if worker is not None:
            name = self.backend.queue_name(channel)
            self._in_worker_loop(lambda: worker.consumer.cancel_task_queue(name))

    def _in_worker_loop(self, fn: Any) -> None:
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
        celery_app = self.backend.celery
        with self._lock:
            channels = list(self._subs)
            threads = sum(
                self.config.concurrency(s) or UNLIMITED_THREADS
                for s in self._subs.values()
            )
        for channel in channels:
            celery_app.amqp.queues.select_add(self.backend.broker_queue(channel))
        worker, ready = build_worker(
            celery_app,
            hostname=f"mc-{self.config.app_name}-{self.app.node_id}@mega-cluster",
            queues=[self.backend.queue_name(c) for c in channels],
            concurrency=max(1, threads),
        )
        self._ready = ready
        self._worker = worker
        self._thread = threading.Thread(
            target=self._run_worker,
            name=f"mc-events-celery-{self.config.app_name}",
            daemon=True,
        )
        self._thread.start()
        if not ready.wait(30) or self.error is not None:
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
        if _consumers.get(self.config.app_name) is self:
            del _consumers[self.config.app_name]
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
        self,
        event_id: str,
        channel: str,
        first: Any = None,
        redelivered: bool = False,
    ) -> None:
        """Run one attempt of ``event_id`` (called by the task, in a worker thread);
        ``first`` is ``[payload, max_retries, timeout]`` from a first message (with
        :data:`LEAN` after them from a lean one); ``redelivered``: the broker says
        a consumer had the message before."""
        with self._lock:
            sub = self._subs.get(channel)
            slot = self._slots.get(channel)
        lean = first is not None and len(first) > 3 and first[3] == LEAN
        if sub is None:
            logger.warning(
                "event %s: channel %s is not consumed here", event_id, channel
            )
            self.backend.resend(channel, event_id, 1.0, first if lean else None)
            return
        held = _Slot(slot)
        try:
            self._wait_idle(sub)
            if lean and not redelivered:
                self._attempt_lean(sub, event_id, channel, first, held)
                return
            event = self._with_store(
                event_id,
                channel,
                self.backend.claim_one,
                event_id,
                lease=self.lease,
                first=None if first is None else (channel, first[0], first[1:]),
                lost=lean,
            )
            if event is None:
                return
            if isinstance(event, float):
                # Running elsewhere, or not due yet: look again when it may be.
                self.backend.resend(channel, event_id, event + 0.05)
                return
            with self._lock:
                self._running[event.id] = event
            try:
                self._attempt(sub, event, held)
            finally:
                with self._lock:
                    self._running.pop(event.id, None)
        finally:
            held.release()
            close_old_connections()

    def _attempt_lean(
        self, sub: Subscription, event_id: str, channel: str, first: Any, held: _Slot
    ) -> None:
        """A lean event's first attempt: no claim, no row unless it needs one."""
        entry = _Lean(
            ClaimedEvent(
                id=event_id,
                channel=channel,
                payload=first[0],
                attempt=1,
                max_retries=first[1],
                timeout=first[2],
            )
        )
        with self._lock:
            self._lean[event_id] = entry
        try:
            self._attempt(sub, entry.event, held, entry)
        finally:
            with self._lock:
                self._lean.pop(event_id, None)

    def _with_store(
        self, event_id: str, channel: str, write: Any, *args: Any, **kwargs: Any
    ) -> Any:
        """A store write that waits out an outage (``write_to_store``) while the
        message stays unacknowledged; at shutdown the message goes back to the
        broker rather than being acked without its row."""
        try:
            return write_to_store(
                self._stopping, event_id, channel, write, *args, **kwargs
            )
        except DatabaseError as exc:  # only once stopping
            from celery.exceptions import Reject

            raise Reject(
                f"event store unreachable at shutdown: {exc}", requeue=True
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
        held: _Slot,
        lean: _Lean | None = None,
    ) -> None:
        attempt = Attempt.of(sub, event)
        error = attempt.spent()
        if error is not None:
            self._with_store(event.id, event.channel, self.backend.bury, event, error)
            log_dead(event, error)
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
            # A lean event's store is chosen once its handler returned.
            _LeanStore(self.backend, self._with_store, lean)
            if lean is not None
            else RetryingStore(self.backend, self._with_store),
            self.config.app_name,
            attempt,
            outcome,
            self.config.retry_base,
            self.config.retry_cap,
        )


class _Slot:
    """A channel's concurrency slot held by one delivery, released once (at the
    attempt's timeout or when the delivery ends)."""

    def __init__(self, slot: threading.BoundedSemaphore | None) -> None:
        self._slot = slot
        self._lock = threading.Lock()
        if slot is not None:
            slot.acquire()

    def release(self) -> None:
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()
