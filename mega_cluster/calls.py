"""Calling a function that may be sync or async: the one rule of the package.

User code handed to mega_cluster (plugin hooks, sync-message handlers, the ``fn`` of
``Cache.awrap`` and ``LockManager.arun_exclusive``) may be a plain function, an
``async def``, or a plain function that returns an awaitable. Two helpers, one per
side of the caller:

- :func:`call_sync` from sync code: a plain result is returned as is; an awaitable
  is run to completion with ``async_to_sync`` (in the caller's running loop's
  thread when there is one, else in a new loop), so the caller gets the value.
- :func:`acall` from async code: an ``async def`` is awaited on the caller's loop;
  a plain function runs in a worker thread (``sync_to_async``) so it never blocks
  the loop, and an awaitable it returns is awaited.

The pub/sub dispatcher keeps its own loop for handlers (it runs thousands of them a
second on one long-lived loop); the event queue's consumers have their own
timeout-aware rule in ``events/``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, sync_to_async


async def _wait(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def call_sync(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` from sync code; an awaitable result is awaited to its value."""
    result = fn(*args)
    # isawaitable() is slow on None (ABC checks), and most callables return None
    if result is not None and inspect.isawaitable(result):
        return async_to_sync(_wait)(result)
    return result


async def acall(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` from async code: ``async def`` awaited, a plain function in a
    worker thread (its awaitable result awaited)."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args)
    result = await sync_to_async(fn)(*args)
    if result is not None and inspect.isawaitable(result):
        return await result
    return result
