"""Small pieces shared by the cache modules: argument checks, wire names, the
thread hop of the async twins."""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async

from ..validation import NAME_RE, validate_seconds

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
    """``ttl`` when it is ``None``, ``FOREVER`` or a positive number of seconds of at
    most ``MAX_SECONDS``, else raise (``ArgumentTypeError`` / ``InvalidArgument``)."""
    if ttl is None:
        return None
    return validate_seconds(ttl, what, allow_zero=False, allow_forever=True)


def check_fn(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}.")


def wire_name(*parts: str) -> str:
    """``"a:b:c"`` when it is a valid name, else a stable hashed stand-in."""
    name = ":".join(parts)
    if NAME_RE.fullmatch(name):
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()
    return f"{parts[0]}:{digest}"
