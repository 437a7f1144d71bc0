"""The pull consumer: claims events of the subscribed channels and runs them.

One asyncio loop thread per event queue drives everything: per channel a pull
task that claims as many events as the channel has free slots, one task per
running event (its attempt by :class:`~.attempts.HandlerRunner`, then the outcome,
the slot freed and the pull task woken at once), and a lease renewal task. Sync
handlers run in the runner's elastic thread pool, backend I/O in a small pool of
its own (connections kept open). A pull task sleeps until it is woken by the
backend (a publish, a database notification), a slot frees, or the next delayed
event is due; ``POLL_INTERVAL`` bounds the sleep only for backends whose
notifications can be missed.

A timed-out attempt frees its slot at once but keeps its event (claimed, leased)
until its handler returned; only then is the timeout recorded and the retry
scheduled, so an event never runs twice at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import node
from ..exceptions import BackendUnavailable
from .attempts import (
    STORE_RETRY_CAP,
    Attempt,
    HandlerRunner,
    RetryingStore,
    finish_attempt,
    log_dead,
    log_start,
    report_spent,
    store_writer,
    upkeep_interval,
)
from .backends.base import ClaimedEvent, EventBackend
from .context import ConsumerConfig, Subscription
from .pool import ThreadPool

logger = logging.getLogger("mega_cluster.events")

#: Events claimed at once for a channel with unlimited concurrency.
UNLIMITED_BATCH = 100
#: How often a closed ``idle()`` gate is asked again when nothing wakes the channel.
IDLE_RECHECK = 0.05
IO_THREADS = 4


def _guarded(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with node.fork_guard():
        return fn(*args, **kwargs)


@dataclass(eq=False)
class _Running:
    attempt: Attempt
    task: asyncio.Task[Any] | None = None


@dataclass(eq=False)
class _Channel:
    sub: Subscription
    concurrency: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Attempts holding a slot.
    running: dict[str, _Running] = field(default_factory=dict)
    #: Timed-out attempts whose handler has not returned: no slot, but the event
    #: stays theirs (leased) until it does.
    lingering: dict[str, _Running] = field(default_factory=dict)
    task: asyncio.Task[Any] | None = None
    active: bool = True
    #: Claims in a row that failed because the store was unreachable.
    outage: int = 0


class Consumer:
    """The pull consumer (an :class:`~.backends.base.EventConsumer`) of backends
    that implement ``claim()``."""

    def __init__(self, backend: EventBackend, config: ConsumerConfig) -> None:
        self.backend = backend
        self.config = config
        self.lease = config.lease
        self.poll = config.poll_interval
        name = f"mc-events-{config.app_name}"
        self.io = ThreadPool(f"{name}-io", max_threads=IO_THREADS)
        self.loop = asyncio.new_event_loop()
        self.runner = HandlerRunner(name, self.loop)
        self._thread = threading.Thread(target=self._run_loop, name=name, daemon=True)
        self._channels: dict[str, _Channel] = {}
        self._draining = False
        #: Set when the drain timeout passed: outcome writes stop waiting for the store.
        self._give_up = threading.Event()
        self._write = store_writer(self._give_up)
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
        if not self.config.takes(sub.channel):
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
                    "event consumer of app %s did not stop cleanly",
                    self.config.app_name,
                )
            self._thread.join(10)
        self.io.shutdown(5)
        self.runner.close()

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
            "event consumer of app %s failed", self.config.app_name, exc_info=exc
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
        elif (found := self._channels.get(channel)) is not None:
            found.wake.set()

    def _add(self, sub: Subscription) -> None:
        if self._draining:
            return
        old = self._channels.get(sub.channel)
        if old is not None:
            old.active = False
            old.wake.set()
        state = _Channel(sub=sub, concurrency=self.config.concurrency(sub))
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
                    open_ = bool(await self.runner.acall(sub.idle))
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
            except BackendUnavailable as exc:
                # The store is down (or its circuit open): keep trying, backing
                # off up to STORE_RETRY_CAP, with a warning now and then.
                state.outage += 1
                if state.outage == 1 or state.outage % 20 == 0:
                    logger.warning(
                        "claiming events of channel %s failed (%d tries so far): %s",
                        channel,
                        state.outage,
                        exc,
                    )
                pause = min(STORE_RETRY_CAP, self.poll * 2 ** min(state.outage, 10))
                await self._sleep(state, pause)
                continue
            except Exception:
                logger.exception("claiming events of channel %s failed", channel)
                await self._sleep(state, self.poll)
                continue
            if state.outage:
                logger.warning("claiming events of channel %s works again", channel)
                state.outage = 0
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
                due = await self._io(self._due_in, channel)
            except Exception:
                logger.exception(
                    "reading the next due event of channel %s failed", channel
                )
                due = None
            timeout = self.poll if capped else None
            if due is not None:
                wait = max(0.0, due) + 0.001
                timeout = wait if timeout is None else min(timeout, wait)
            await self._sleep(state, timeout)

    def _due_in(self, channel: str) -> float | None:
        """Seconds until an event of ``channel`` is due, on the backend's clock
        (the database server's for the database backend), or None."""
        due = self.backend.next_due(channel)
        if due is None:
            return None
        return due - getattr(self.backend, "now", time.time)()

    def _launch(self, state: _Channel, event: ClaimedEvent) -> None:
        running = _Running(attempt=Attempt.of(state.sub, event))
        running.attempt.on_timeout = lambda: self._linger(state, running)
        state.running[event.id] = running
        running.task = asyncio.create_task(self._run(state, running))

    def _linger(self, state: _Channel, running: _Running) -> None:
        """A timed-out attempt: free its slot, keep its event until it returns."""
        event_id = running.attempt.event.id
        if state.running.pop(event_id, None) is not None:
            state.lingering[event_id] = running
        state.wake.set()

    async def _run(self, state: _Channel, running: _Running) -> None:
        attempt = running.attempt
        event = attempt.event
        try:
            config = self.config
            error = (
                attempt.reject(config.app_name, "event", config.max_bytes)
                or attempt.spent()
            )
            if error is not None:
                await self._io(
                    self._write,
                    event.id,
                    event.channel,
                    self.backend.bury,
                    event,
                    error,
                )
                log_dead(event, error)
                await self._io(report_spent, attempt, error)
                return
            log_start(event)
            outcome = await self.runner.arun(attempt)
            args = (
                RetryingStore(self.backend, self._write),
                self.config.app_name,
                attempt,
                outcome,
                self.config.retry_base,
                self.config.retry_cap,
            )
            if outcome.settled and outcome.error is None:
                finish_attempt(*args)  # nothing to write: no I/O thread
            else:
                await self._io(finish_attempt, *args)
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
            state.lingering.pop(event.id, None)
            state.wake.set()

    async def _prune(self) -> None:
        retention = self.config.retention
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
            events = [r.attempt.event for r in self._attempts()]
            if events:
                try:
                    await self._io(self.backend.renew, events, lease=self.lease)
                except Exception:
                    logger.exception("renewing event leases failed")

    def _attempts(self) -> list[_Running]:
        """Every attempt of this consumer, in a slot or lingering after a timeout."""
        return [
            r
            for s in self._channels.values()
            for r in (*s.running.values(), *s.lingering.values())
        ]

    async def _shutdown(self, drain_timeout: float) -> None:
        self._draining = True
        for state in self._channels.values():
            state.active = False
            state.wake.set()
        # Running handlers learn at once that the node is draining.
        for r in self._attempts():
            r.attempt.ctx.cancelled.set()
        pulls = [s.task for s in self._channels.values() if s.task is not None]
        if pulls:
            await asyncio.wait(pulls, timeout=5)
        running = self._attempts()
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
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=10)
        assert self._stopped is not None
        self._stopped.set()
