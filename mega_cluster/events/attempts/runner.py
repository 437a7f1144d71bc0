"""Running a handler: the one rule, for every consumer (pull consumer, Celery).

:class:`HandlerRunner` holds the one rule for running a handler:

* a sync handler runs in a worker thread (the consumer's handler pool, or the
  Celery worker's own thread), its thread's old database connections closed around
  it as Django does around a request;
* an ``async def`` handler runs on a long-lived event loop (the pull consumer's, or
  one the runner starts), never a fresh loop per event;
* at the timeout ``ctx.cancelled`` is set, the consumer is told (it may free the
  slot) and an async handler is cancelled; the attempt then keeps its event (its
  claim, its lease, its message) until the handler really returned, and only then
  records "timed out": a retry never runs while the timed-out attempt still does.

:func:`finish_attempt` records the outcome (success, retry with :func:`backoff`, or
dead letter) through a store whose writes :func:`keep_trying` waits out.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from django.db import close_old_connections

from ... import node
from ..context import EventContext
from ..pool import ThreadPool
from .record import SETTLED, Attempt, Outcome


def call_sync(fn: Callable[..., Any], payload: Any, ctx: EventContext) -> Any:
    """A sync handler call, as a request: the thread's old connections closed
    around it."""
    with node.fork_guard():
        close_old_connections()
    try:
        return fn(payload, ctx)
    finally:
        with node.fork_guard():
            close_old_connections()


class _Deadline:
    """A sync attempt's timeout, fired on the runner's loop: sets ``ctx.cancelled``
    and tells the consumer, unless the handler returned first."""

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.lock = threading.Lock()
        self.over = False  # the handler returned, or the deadline fired
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None

    def fire(self) -> None:
        with self.lock:
            if self.over:
                return
            self.over = self.fired = True
        self.attempt.ctx.cancelled.set()
        self.attempt.on_timeout()

    def end(self) -> bool:
        """The handler returned: whether the deadline had passed."""
        with self.lock:
            self.over = True
            return self.fired


class HandlerRunner:
    """Runs handlers by the one rule (module docstring), from the consumer's loop
    (:meth:`arun`) or from a worker thread (:meth:`run`).

    ``loop``: the consumer's running loop; without one the runner starts a loop
    thread of its own the first time it needs one (an async handler or a timeout).
    """

    def __init__(
        self, name: str, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        self.name = name
        self._loop = loop
        self._own_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pool: ThreadPool | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = self._loop = asyncio.new_event_loop()
                ready = threading.Event()
                loop.call_soon(ready.set)
                self._own_thread = threading.Thread(
                    target=_run_forever,
                    args=(loop,),
                    name=f"{self.name}-async",
                    daemon=True,
                )
                self._own_thread.start()
                ready.wait(10)
            return self._loop

    @property
    def pool(self) -> ThreadPool:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPool(f"{self.name}-handler")
            return self._pool

    def close(self) -> None:
        """Stop the handler pool and the runner's own loop (not a given one)."""
        with self._lock:
            pool, thread, loop = self._pool, self._own_thread, self._loop
        if pool is not None:
            pool.shutdown(0.1)
        if thread is not None and loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)

    async def acall(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the loop, awaited when it returns an awaitable."""
        result = fn()
        if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
            result = await result
        return result

    def call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` from a worker thread; an awaitable it returns runs on the loop."""
        result = fn()
        if asyncio.iscoroutine(result):
            return asyncio.run_coroutine_threadsafe(result, self.loop).result()
        return result

    async def arun(self, attempt: Attempt) -> Outcome:
        """Run ``attempt``, awaited on the runner's loop; a sync handler runs in the
        handler pool. Cancelling it sets ``ctx.cancelled`` (a forced shutdown)."""
        if attempt.sub.is_async:
            return await self._run_async(attempt)
        try:
            return await asyncio.wrap_future(self.pool.submit(self.run, attempt))
        except asyncio.CancelledError:
            attempt.ctx.cancelled.set()
            raise

    def run(self, attempt: Attempt) -> Outcome:
        """Run ``attempt`` from a worker thread (not the loop's): a sync handler in
        this thread, an async one on the loop while this thread waits."""
        if attempt.sub.is_async:
            coro = self._run_async(attempt)
            return asyncio.run_coroutine_threadsafe(coro, self.loop).result()
        deadline = None
        if attempt.timeout is not None:
            deadline = _Deadline(attempt)
            self._arm(deadline, attempt.timeout)
        try:
            returned = call_sync(attempt.sub.process, attempt.decoded(), attempt.ctx)
            outcome = Outcome(settled=returned is SETTLED)
        except Exception as exc:
            outcome = _failure(exc)
        if deadline is not None and self._disarm(deadline):
            return Outcome(f"timed out after {attempt.timeout:g}s")
        return outcome

    def _arm(self, deadline: _Deadline, seconds: float) -> None:
        loop = self.loop

        def arm() -> None:
            if not deadline.over:
                deadline.handle = loop.call_later(seconds, deadline.fire)

        loop.call_soon_threadsafe(arm)

    def _disarm(self, deadline: _Deadline) -> bool:
        """The handler returned: cancel its deadline; whether it had passed."""
        fired = deadline.end()

        def disarm() -> None:  # runs after arm(): the loop keeps their order
            if deadline.handle is not None:
                deadline.handle.cancel()

        self.loop.call_soon_threadsafe(disarm)
        return fired

    async def _run_async(self, attempt: Attempt) -> Outcome:
        ctx = attempt.ctx
        try:
            task = asyncio.ensure_future(attempt.sub.process(attempt.decoded(), ctx))
        except Exception as exc:
            return _failure(exc)
        try:
            done, _ = await asyncio.wait({task}, timeout=attempt.timeout)
            if not done:
                # Set the flag first so a cancelled handler can see why.
                ctx.cancelled.set()
                attempt.on_timeout()
                task.cancel()
                # The event stays this attempt's until the coroutine really ended.
                await asyncio.wait({task})
                return Outcome(f"timed out after {attempt.timeout:g}s")
            returned = task.result()
        except asyncio.CancelledError:
            ctx.cancelled.set()
            task.cancel()
            raise
        except Exception as exc:
            return _failure(exc)
        return Outcome(settled=returned is SETTLED)


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


def _failure(exc: Exception) -> Outcome:
    return Outcome(f"{type(exc).__name__}: {exc}", exc)
