"""Local coalescing for ``wrap``: one computation per key per process.

The first caller of a key leads; later callers of the same key wait for the
leader's outcome (its value, or the exception it raised) for at most ``timeout``
seconds and then run the computation themselves. Threads coalesce with threads;
coroutines coalesce with coroutines of the same event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class _Flight:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._async: dict[tuple[int, str], asyncio.Future[Any]] = {}

    def in_flight(self, key: str) -> bool:
        return key in self._flights

    def run(
        self,
        key: str,
        lead: Callable[[], T],
        fallback: Callable[[], T],
        timeout: float,
    ) -> T:
        """``lead()`` once for concurrent callers of ``key``; ``fallback()`` for a
        caller that waited ``timeout`` seconds in vain."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if not flight.done.wait(timeout):
                return fallback()
            if flight.error is not None:
                raise flight.error
            return flight.value
        try:
            flight.value = lead()
            return flight.value
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()

    async def arun(
        self,
        key: str,
        lead: Callable[[], Awaitable[T]],
        fallback: Callable[[], Awaitable[T]],
        wait: float,
    ) -> T:
        """The coroutine twin of :meth:`run` (``wait`` is its ``timeout``),
        coalescing per event loop."""
        loop = asyncio.get_running_loop()
        slot = (id(loop), key)
        future = self._async.get(slot)
        if future is not None and future.get_loop() is loop:
            try:
                return await asyncio.wait_for(asyncio.shield(future), wait)
            except TimeoutError:
                return await fallback()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not future.cancelled() or (task is not None and task.cancelling()):
                    raise
                # The leader was cancelled, not us: compute ourselves.
                return await fallback()
        future = loop.create_future()
        self._async[slot] = future
        try:
            value = await lead()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            # Nobody may be waiting: retrieve it so asyncio does not log it.
            future.exception()
            raise
        else:
            future.set_result(value)
            return value
        finally:
            if self._async.get(slot) is future:
                del self._async[slot]
