"""Small pieces shared by the cache modules: argument checks, wire names, the
thread hop of the async twins."""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async

from ..names import NAME_RE

#: ``ttl=FOREVER`` stores without expiry even when the cache has a default TTL.
FOREVER = math.inf


def in_thread(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """``func`` as a coroutine function running in a worker thread."""
    # Store clients are thread-safe: no need to queue behind the main thread.
    return sync_to_async(func, thread_sensitive=False)


def new_token() -> int:
    """A new namespace generation."""
    # An int, not a string: the Redis backends store ints raw, so reading the
    # generation costs no unpickling on the hit path. Random, so a generation key
    # lost to eviction never brings an old generation back.
    return secrets.randbits(62)


def check_ttl(ttl: object, what: str = "ttl") -> float | None:
    """``ttl`` when it is ``None`` or a positive number of seconds, else raise."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise TypeError(f"{what} must be a number of seconds or None, got {ttl!r}.")
    if not ttl > 0:
        raise ValueError(
            f"{what} must be greater than 0 seconds, got {ttl!r} (None means the "
            "cache's default; FOREVER means no expiry)."
        )
    return float(ttl)


def check_fn(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}.")


def wire_name(*parts: str) -> str:
    """``"a:b:c"`` when it is a valid name, else a stable hashed stand-in."""
    name = ":".join(parts)
    if NAME_RE.match(name):
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()
    return f"{parts[0]}:{digest}"
