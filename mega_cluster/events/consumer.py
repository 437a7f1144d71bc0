"""The consumer: pulls events of the subscribed channels and runs their handlers.

One asyncio loop thread per event queue drives everything: per channel a pull
task that claims as many events as the channel has free slots, one task per
running event (timeout, retry or dead letter, then the slot is freed and the pull
task woken at once), and a lease renewal task. Sync handlers run in an elastic
thread pool, backend I/O in a small pool of its own (connections kept open).
A pull task sleeps until it is woken by the backend (a publish, a database
notification), a slot frees, or the next delayed event is due; ``POLL_INTERVAL``
bounds the sleep only for backends whose notifications can be missed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import Error as DatabaseError
from django.db import close_old_connections

from .. import metrics, node
from .backends.base import ClaimedEvent
from .pool import ThreadPool
from .queue import EventContext, Subscription

if TYPE_CHECKING:
    from .queue import EventQueue

logger = logging.getLogger("mega_cluster.events")

#: Events claimed at once for a channel with unlimited concurrency.
UNLIMITED_BATCH = 100
#: How often a closed ``idle()`` gate is asked again when nothing wakes the channel.
IDLE_RECHECK = 0.05
IO_THREADS = 4


#: Characters of a failed attempt's traceback kept with the event.
MAX_STORED_TRACEBACK = 8000
#: Longest pause between tries of a store write while the store is unreachable.
STORE_RETRY_CAP = 5.0


#: Longest pause between two rounds of a consuming node's upkeep: the retention
#: prune, and the Celery backend's look for lost events (seconds).
UPKEEP_EVERY = 60.0


def upkeep_interval(age: float) -> float:
    """How often to look for rows older than ``age`` seconds (the retention prune,
    lost events): twice per ``age``, at most every :data:`UPKEEP_EVERY`."""
    return min(UPKEEP_EVERY, max(0.1, age / 2))


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay / 2 + random.uniform(0, delay / 2)


def _call_sync(fn: Callable[..., Any], payload: Any, ctx: EventContext) -> Any:
    with node.fork_guard():
        close_old_connections()
    try:
        return fn(payload, ctx)
    finally:
        with node.fork_guard():
            close_old_connections()


def _guarded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with node.fork_guard():
        return fn(*args, **kwargs)


def keep_trying(
    stop: threading.Event,
    trouble: str,
    event_id: str,
    channel: str,
    fn: Callable[..., Any],
    *args: Any,
    errors: tuple[type[BaseException], ...] = (DatabaseError,),
    **kwargs: Any,
) -> Any:
    """``fn(*args, **kwargs)``, tried again while it raises one of ``errors``.

    For a write an event cannot do without (its claim, its outcome, its next
    message): the caller keeps the event (its slot, its message) meanwhile. Waits
    double from 0.1 s up to ``STORE_RETRY_CAP``; ``trouble`` says what went wrong in
    the warning logged at the first failure and every twentieth. Raises the last
    error once ``stop`` is set.
    """
    failures = 0
    while True:
        try:
            with node.fork_guard():
                result = fn(*args, **kwargs)
        except errors as exc:
            failures += 1
            if failures == 1 or failures % 20 == 0:
                logger.warning(
                    "event %s on channel %s: %s (%s); tried again (%d tries so far)",
                    event_id,
                    channel,
                    trouble,
                    exc,
                    failures,
                    extra={"event_id": event_id, "channel": channel},
                )
            if stop.wait(min(STORE_RETRY_CAP, 0.05 * 2 ** min(failures, 10))):
                raise
            continue
        if failures:
            logger.warning(
                "event %s on channel %s: done after %d failed tries",
                event_id,
                channel,
                failures,
                extra={"event_id": event_id, "channel": channel},
            )
        return result


def write_to_store(
    stop: threading.Event,
    event_id: str,
    channel: str,
    write: Callable[..., Any],
    *args: Any,
    **kwargs: Any,
) -> Any:
    """``write(*args, **kwargs)``, tried again while the event store is unreachable.

    A claim or an outcome that cannot be written is not given up: the event would
    be lost, or left 'running' until its lease lapses and then counted as an
    attempt whose worker died although its handler succeeded.
    """
    return keep_trying(
        stop,
        "the event store is unreachable",
        event_id,
        channel,
        write,
        *args,
        **kwargs,
    )


class RetryingStore:
    """The backend as :func:`finish_attempt` sees it: the outcome writes go through
    ``write(event_id, channel, method, *args, **kwargs)`` (a retrying call)."""

    def __init__(self, backend: Any, write: Callable[..., Any]) -> None:
        self.app = backend.app
        self._backend = backend
        self._write = write

    def complete(self, event: ClaimedEvent) -> None:
        self._write(event.id, event.channel, self._backend.complete, event)

    def retry(self, event: ClaimedEvent, error: str, *, available_at: float) -> None:
        self._write(
            event.id,
            event.channel,
            self._backend.retry,
            event,
            error,
            available_at=available_at,
        )

    def bury(self, event: ClaimedEvent, error: str) -> None:
        self._write(event.id, event.channel, self._backend.bury, event, error)


def finish_attempt(
    backend: Any,
    event: ClaimedEvent,
    error: str | None,
    exc_info: BaseException | None,
    max_retries: int,
    retry_base: float,
    retry_cap: float,
) -> float | None:
    """Record an attempt's outcome and log it; the retry delay if one is due."""
    extra = {"event_id": event.id, "channel": event.channel}
    labels = {"app": backend.app.name, "channel": event.channel}
    metrics.inc("event_attempts", **labels)
    if error is None:
        backend.complete(event)
        logger.debug(
            "event %s on channel %s succeeded", event.id, event.channel, extra=extra
        )
        return None
    metrics.inc("event_failures", **labels)
    stored = error
    if exc_info is not None:
        # Stored with its traceback for the admin's event page (last line = error).
        trace = "".join(traceback.format_exception(exc_info)).rstrip()
        stored = trace[-MAX_STORED_TRACEBACK:]
    if event.attempt <= max_retries:
        delay = backoff(event.attempt, retry_base, retry_cap)
        backend.retry(event, stored, available_at=time.time() + delay)
        logger.warning(
            "event %s on channel %s: attempt %d of %d failed (%s); retry in %.2fs",
            event.id,
            event.channel,
            event.attempt,
            max_retries + 1,
            error,
            delay,
            exc_info=exc_info,
            extra=extra,
        )
        return delay
    backend.bury(event, stored)
    metrics.inc("event_dead_letters", **labels)
    logger.warning(
        "event %s on channel %s: attempt %d failed (%s)",
        event.id,
        event.channel,
        event.attempt,
        error,
        exc_info=exc_info,
        extra=extra,
    )
    log_dead(event, error)
    return None


def log_dead(event: ClaimedEvent, error: str) -> None:
    logger.error(
        "event %s on channel %s dead-lettered after %d attempt(s): %s",
        event.id,
        event.channel,
        event.attempt,
        error,
        extra={"event_id": event.id, "channel": event.channel},
    )


def log_start(event: ClaimedEvent) -> None:
    logger.info(
        "event %s on channel %s: attempt %d started",
        event.id,
        event.channel,
        event.attempt,
        extra={"event_id": event.id, "channel": event.channel},
    )


@dataclass(eq=False)
class _Running:
    event: ClaimedEvent
    ctx: EventContext
    task: asyncio.Task[Any] | None = None


@dataclass(eq=False)
class _Channel:
    sub: Subscription
    concurrency: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    running: dict[str, _Running] = field(default_factory=dict)
    task: asyncio.Task[Any] | None = None
    active: bool = True


class Consumer:
    def __init__(self, queue: EventQueue) -> None:
        self.queue = queue
        self.backend = queue.backend
        settings = queue.settings
        self.lease: float = settings["LEASE"]
        self.poll: float = settings["POLL_INTERVAL"]
        self.retry_base: float = settings["RETRY_BASE"]
        self.retry_cap: float = settings["RETRY_CAP"]
        name = f"mc-events-{queue.app.name}"
        self.handlers = ThreadPool(f"{name}-handler")
        self.io = ThreadPool(f"{name}-io", max_threads=IO_THREADS)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._channels: dict[str, _Channel] = {}
        self._draining = False
        #: Set when the drain timeout passed: outcome writes stop waiting for the store.
        self._give_up = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._failed = threading.Event()
        self.error: BaseException | None = None

    # thread-safe entry points ----------------------------------------------------

    def start(self) -> None:
        self.backend.add_waker(self._on_wake)
        self._thread.start()
        self._ready.wait(10)

    def add(self, sub: Subscription) -> None:
        if (
            self.queue.only_channels is not None
            and sub.channel not in self.queue.only_channels
        ):
            return
        done = threading.Event()

        def add() -> None:
            self._add(sub)
            done.set()

        self.loop.call_soon_threadsafe(add)
        done.wait(10)

    def remove(self, channel: str) -> None:
        done = threading.Event()

        def remove() -> None:
            self._remove(channel)
            done.set()

        self.loop.call_soon_threadsafe(remove)
        done.wait(10)

    def stop(self, drain_timeout: float) -> None:
        self.backend.remove_waker(self._on_wake)
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(
                self._shutdown(drain_timeout), self.loop
            )
            try:
                future.result(drain_timeout + 30)
            except Exception:
                logger.exception(
                    "event consumer of app %s did not stop cleanly", self.queue.app.name
                )
            self._thread.join(10)
        self.io.shutdown(5)
        self.handlers.shutdown(0.1)

    def wait_failed(self, timeout: float | None) -> BaseException | None:
        self._failed.wait(timeout)
        return self.error

    def _on_wake(self, channel: str | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self._wake, channel)
        except RuntimeError:  # loop closed during shutdown
            pass

    # loop side ---------------------------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:
            self._fatal(exc)
        finally:
            self.loop.close()

    def _fatal(self, exc: BaseException) -> None:
        logger.critical(
            "event consumer of app %s failed", self.queue.app.name, exc_info=exc
        )
        self.error = exc
        self._failed.set()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        self._ready.set()
        chores = [asyncio.create_task(self._prune())]
        if self.backend.leases:
            chores.append(asyncio.create_task(self._renew_leases()))
        await self._stopped.wait()
        for chore in chores:
            chore.cancel()

    def _wake(self, channel: str | None) -> None:
        if channel is None:
            for state in self._channels.values():
                state.wake.set()
        elif (state := self._channels.get(channel)) is not None:
            state.wake.set()

    def _add(self, sub: Subscription) -> None:
        if self._draining:
            return
        old = self._channels.get(sub.channel)
        if old is not None:
            old.active = False
            old.wake.set()
        concurrency = self.queue.concurrency_override
        state = _Channel(
            sub=sub, concurrency=sub.concurrency if concurrency is None else concurrency
        )
        self._channels[sub.channel] = state
        state.task = asyncio.create_task(self._pull(state))
        state.task.add_done_callback(self._pull_done)

    def _pull_done(self, task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._fatal(task.exception())  # type: ignore[arg-type]

    def _remove(self, channel: str) -> None:
        state = self._channels.get(channel)
        if state is not None:
            state.active = False
            state.wake.set()

    async def _io(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.backend.blocking:
            return fn(*args, **kwargs)
        return await asyncio.wrap_future(
            self.io.submit(lambda: _guarded(fn, *args, **kwargs))
        )

    async def _sleep(self, state: _Channel, seconds: float | None) -> None:
        try:
            await asyncio.wait_for(state.wake.wait(), seconds)
        except TimeoutError:
            pass

    async def _idle_open(self, idle: Callable[[], Any]) -> bool:
        result = idle()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        return bool(result)

    async def _pull(self, state: _Channel) -> None:
        sub = state.sub
        channel = sub.channel
        capped = self.backend.blocking or not self.backend.notifies
        while state.active and not self._draining:
            free = (
                state.concurrency - len(state.running)
                if state.concurrency
                else UNLIMITED_BATCH
            )
            state.wake.clear()
            if free <= 0:
                await self._sleep(state, None)
                continue
            if sub.idle is not None:
                try:
                    open_ = await self._idle_open(sub.idle)
                except Exception:
                    logger.exception("idle() of event channel %s raised", channel)
                    open_ = False
                if not open_:
                    await self._sleep(state, min(IDLE_RECHECK, self.poll))
                    continue
            try:
                events = await self._io(
                    self.backend.claim, channel, free, lease=self.lease
                )
            except Exception:
                logger.exception("claiming events of channel %s failed", channel)
                await self._sleep(state, self.poll)
                continue
            if events and (not state.active or self._draining):
                # Unsubscribed or stopping while the claim ran: hand them back.
                for event in events:
                    await self._io(self.backend.release, event)
                break
            if events:
                for event in events:
                    self._launch(state, event)
                continue
            try:
                due = await self._io(self.backend.next_due, channel)
            except Exception:
                logger.exception(
                    "reading the next due event of channel %s failed", channel
                )
                due = None
            timeout = self.poll if capped else None
            if due is not None:
                wait = max(0.0, due - time.time()) + 0.001
                timeout = wait if timeout is None else min(timeout, wait)
            await self._sleep(state, timeout)

    def _launch(self, state: _Channel, event: ClaimedEvent) -> None:
        ctx = EventContext(id=event.id, channel=event.channel, attempt=event.attempt)
        running = _Running(event=event, ctx=ctx)
        state.running[event.id] = running
        running.task = asyncio.create_task(self._run(state, running))

    async def _run(self, state: _Channel, running: _Running) -> None:
        event, ctx, sub = running.event, running.ctx, state.sub
        max_retries = max(event.max_retries, sub.max_retries or 0)
        timeout = event.timeout if event.timeout is not None else sub.timeout
        try:
            if event.attempt > max_retries + 1:
                # The budget went on attempts whose worker died (lease lapsed).
                error = (
                    f"attempt {event.attempt - 1} was lost (worker died, lease lapsed)"
                )
                await self._io(
                    self._write,
                    event.id,
                    event.channel,
                    self.backend.bury,
                    event,
                    error,
                )
                self._log_dead(event, error)
                return
            log_start(event)
            error: str | None = None
            exc_info: BaseException | None = None
            inner: asyncio.Future[Any] | None = None
            try:
                payload = json.loads(event.payload)
                if sub.is_async:
                    inner = asyncio.ensure_future(sub.process(payload, ctx))
                else:
                    inner = asyncio.wrap_future(
                        self.handlers.submit(_call_sync, sub.process, payload, ctx)
                    )
                done, _ = await asyncio.wait({inner}, timeout=timeout)
                if done:
                    inner.result()
                else:
                    # Set the flag first so a cancelled handler can see why.
                    ctx.cancelled.set()
                    inner.cancel()
                    await asyncio.wait({inner}, timeout=1.0)
                    error = f"timed out after {timeout:g}s"
            except asyncio.CancelledError:
                ctx.cancelled.set()
                if inner is not None:
                    inner.cancel()
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                exc_info = exc
            await self._finish(event, error, exc_info, max_retries)
        except asyncio.CancelledError:
            # Forced shutdown: hand the event back uncounted so another node runs it.
            try:
                await self._io(self.backend.release, event)
            except Exception:
                logger.exception("event %s could not be released", event.id)
        except Exception:
            # Not recorded (the store stayed down until a forced shutdown): the
            # lease lapses and the event is redelivered (at least once).
            logger.exception("recording the outcome of event %s failed", event.id)
        finally:
            state.running.pop(event.id, None)
            state.wake.set()

    async def _finish(
        self,
        event: ClaimedEvent,
        error: str | None,
        exc_info: BaseException | None,
        max_retries: int,
    ) -> None:
        await self._io(
            finish_attempt,
            RetryingStore(self.backend, self._write),
            event,
            error,
            exc_info,
            max_retries,
            self.retry_base,
            self.retry_cap,
        )

    def _write(
        self,
        event_id: str,
        channel: str,
        write: Callable[..., Any],
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        return write_to_store(self._give_up, event_id, channel, write, *args, **kwargs)

    def _log_dead(self, event: ClaimedEvent, error: str) -> None:
        log_dead(event, error)

    async def _prune(self) -> None:
        retention = self.queue.settings["RETENTION"]
        if retention is None:
            return
        while True:
            await asyncio.sleep(upkeep_interval(retention))
            try:
                await self._io(self.backend.prune, retention)
            except Exception:
                logger.exception("pruning succeeded events failed")

    async def _renew_leases(self) -> None:
        interval = self.lease / 3
        while True:
            await asyncio.sleep(interval)
            events = [
                r.event for s in self._channels.values() for r in s.running.values()
            ]
            if events:
                try:
                    await self._io(self.backend.renew, events, lease=self.lease)
                except Exception:
                    logger.exception("renewing event leases failed")

    async def _shutdown(self, drain_timeout: float) -> None:
        self._draining = True
        for state in self._channels.values():
            state.active = False
            state.wake.set()
        pulls = [s.task for s in self._channels.values() if s.task is not None]
        if pulls:
            await asyncio.wait(pulls, timeout=5)
        running = [r for s in self._channels.values() for r in s.running.values()]
        tasks = [r.task for r in running if r.task is not None]
        if tasks:
            logger.info(
                "waiting up to %gs for %d running event(s)", drain_timeout, len(tasks)
            )
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout)
            if pending:
                logger.warning(
                    "drain timeout: cancelling %d running event(s), handing them back",
                    len(pending),
                )
                self._give_up.set()
                for r in running:
                    r.ctx.cancelled.set()
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=10)
        assert self._stopped is not None
        self._stopped.set()
