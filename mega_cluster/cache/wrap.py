"""``Cache.wrap``: one computation per key across the cluster.

Two layers. In the process, :class:`~mega_cluster.cache.flight.SingleFlight`
coalesces concurrent callers of a key behind one leader. Across processes, each
leader takes the key's lock from ``app.lock_manager`` (renewed while ``fn`` runs),
re-reads the cache once it holds it and computes only when the value is still
missing; a waiter is woken by the lock manager's notification, not by polling.
Anyone who waited ``WRAP_TIMEOUT`` seconds computes itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..calls import acall
from ..exceptions import LockLost, LockTimeout
from .common import in_thread
from .near import MISSING

if TYPE_CHECKING:
    from .cache import Cache

logger = logging.getLogger("mega_cluster.cache")
Condition = Callable[[Any], bool] | None


def wrap(
    cache: Cache, key: str, fn: Callable[[], Any], is_cacheable: Condition, ttl: Any
) -> Any:
    """The body of ``Cache.wrap_with_condition`` once the arguments are checked."""
    ns = cache.namespace
    epoch = 0
    if ns.near is not None:
        value, epoch = ns.near_get(key)
        if value is not MISSING:
            return value
    gen, value = ns.fetch_one(key)
    if value is not MISSING:
        if ns.near is not None:
            ns.near_put(key, value, None, epoch)
        return value

    def compute() -> Any:
        value = fn()
        if is_cacheable is None or is_cacheable(value):
            ns.store_computed(key, value, ttl, gen)
        return value

    return ns.flights.run(
        key, lambda: _lead(cache, key, compute), compute, cache.wrap_timeout
    )


def _lead(cache: Cache, key: str, compute: Callable[[], Any]) -> Any:
    if not cache.store.shared:
        return compute()
    result: Any = MISSING
    held = False
    try:
        with cache.app.lock_manager.lock(cache.lock_key(key), wait=cache.wrap_timeout):
            held = True
            # Whoever held the lock before us may have filled it.
            result = cache.namespace.fetch([key])[1][0]
            if result is MISSING:
                result = compute()
    except LockTimeout:
        if held:  # raised by fn, not by the lock
            raise
        _log_lock_timeout(cache, key)
        return compute()
    except LockLost:
        if result is MISSING:
            raise
        # The value is computed and cached; at worst another node computed too.
        logger.warning("cache %s: lost the wrap lock of %r", cache.name, key)
    return result


def _log_lock_timeout(cache: Cache, key: str) -> None:
    logger.warning(
        "cache %s: waited %.1fs for the computation of %r on another node; "
        "computing here",
        cache.name,
        cache.wrap_timeout,
        key,
    )


async def awrap(
    cache: Cache, key: str, fn: Callable[[], Any], is_cacheable: Condition, ttl: Any
) -> Any:
    """The coroutine twin of :func:`wrap`; ``fn`` may be ``async def`` or plain."""
    ns = cache.namespace
    if ns.near is None or ns.subscription is not None:
        value, epoch = ns.near_get(key)
    else:  # the first use subscribes: a round trip
        value, epoch = await in_thread(ns.near_get)(key)
    if value is not MISSING:
        return value
    gen, value = await in_thread(ns.fetch_one)(key)
    if value is not MISSING:
        ns.near_put(key, value, None, epoch)
        return value

    async def compute() -> Any:
        value = await acall(fn)
        if is_cacheable is None or is_cacheable(value):
            await in_thread(ns.store_computed)(key, value, ttl, gen)
        return value

    async def lead() -> Any:
        if not cache.store.shared:
            return await compute()
        result: Any = MISSING
        held = False
        try:
            async with cache.app.lock_manager.lock(
                cache.lock_key(key), wait=cache.wrap_timeout
            ):
                held = True
                result = (await in_thread(ns.fetch)([key]))[1][0]
                if result is MISSING:
                    result = await compute()
        except LockTimeout:
            if held:
                raise
            _log_lock_timeout(cache, key)
            return await compute()
        except LockLost:
            if result is MISSING:
                raise
            logger.warning("cache %s: lost the wrap lock of %r", cache.name, key)
        return result

    return await ns.flights.arun(key, lead, compute, cache.wrap_timeout)
