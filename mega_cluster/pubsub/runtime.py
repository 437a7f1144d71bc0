"""The event loop pub/sub connections live on.

Pub/sub is async-native (nats-py and the Channels layer are async only). In WSGI
and worker processes every manager of the process shares one daemon thread running
one event loop (:func:`background_loop`); sync calls hand coroutines to it with
``run_coroutine_threadsafe`` instead of starting a loop per call. A manager started
with ``await manager.astart()`` inside a running loop (ASGI lifespan) uses that loop
instead, and its listener is a task there. After ``fork`` the child forgets the
parent's thread and builds its own on first use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from .. import node

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The process's pub/sub loop thread, started on first use."""
    global _loop, _thread
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            thread = threading.Thread(
                target=run, name="mega_cluster-pubsub-loop", daemon=True
            )
            thread.start()
            ready.wait(10)
            _loop, _thread = loop, thread
        return _loop


def background_loop_running() -> bool:
    """True while the process's pub/sub loop thread runs."""
    return _thread is not None and _thread.is_alive()


def stop_background_loop(timeout: float = 10.0) -> None:
    """Stop the process's pub/sub loop thread; the next use starts a new one.

    For the testing kit, once every manager that used the loop has stopped (a
    manager still holding it would find it closed).
    """
    global _loop, _thread
    with _lock:
        loop, thread, _loop, _thread = _loop, _thread, None, None
    if loop is None or thread is None:
        return
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout)
    if not thread.is_alive():
        loop.close()


#: The running loop or None (no exception to catch): ``asyncio._get_running_loop``,
#: public since Python 3.7 for loop implementations such as uvloop.
running_loop = asyncio._get_running_loop  # noqa: SLF001 - documented, see above


def in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    """True when the caller runs inside ``loop`` (a blocking wait would deadlock)."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def run_sync(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float
) -> T:
    """Run ``coro`` on ``loop`` from another thread and wait for its result."""
    if in_loop_thread(loop):
        coro.close()
        raise RuntimeError(
            "A sync pub/sub method was called inside the event loop the pub/sub "
            "connections run on; use the async twin (apublish, asubscribe, ...)."
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError(
            f"pub/sub operation did not finish within {timeout}s"
        ) from None


async def run_async(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on ``loop`` from any loop (directly when it is the same one)."""
    if in_loop_thread(loop):
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


def _after_fork() -> None:
    global _lock, _loop, _thread
    # The parent's loop thread does not exist in the child; never touch its loop.
    _lock = threading.Lock()
    _loop = None
    _thread = None


node.on_fork(_after_fork)
