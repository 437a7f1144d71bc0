"""The :class:`Cache`: one namespace in one store (SPEC section 6, Cache)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..calls import acall
from ..names import validate_name
from . import wrap as single_flight
from .common import check_fn, check_ttl, in_thread, new_token, wire_name
from .flight import SingleFlight
from .near import MISSING, NearCache

if TYPE_CHECKING:
    from ..registry import ClusterApp
    from .stores import Store

logger = logging.getLogger("mega_cluster.cache")


class Cache:
    """A namespace ``<app>:<prefix>:`` in a Django cache store.

    Made by :meth:`CacheManager.create_cache`; do not build one directly. Keys are
    1-200 characters of ``A-Z a-z 0-9 _ . : -`` (``InvalidName`` otherwise). Any
    picklable value is cached, including ``None``, ``0``, ``""`` and ``False``:
    ``get`` tells a cached ``None`` from a miss by its ``default`` argument.

    Units are seconds. ``ttl=None`` on a call means the cache's ``ttl``; a cache
    ``ttl`` of ``None`` means the store's own default (``CACHES[...]["TIMEOUT"]``,
    300 s unless set); ``FOREVER`` (``math.inf``) means no expiry.

    ``reset()`` starts a new *generation* of the namespace: the current generation
    (a random int) is stored in the store next to the entries and read in the same
    round trip as them (one ``MGET`` on Redis), so a reset on any node is seen by
    every node at its next read, in O(1), without scanning or clearing anything.
    """

    def __init__(
        self,
        app: ClusterApp,
        *,
        name: str,
        prefix: str,
        store: Store,
        ttl: float | None,
        shared: bool = False,
        near: NearCache | None = None,
        wrap_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.name = name
        self.prefix = prefix
        self.store = store
        self.default_ttl = ttl
        self.shared = shared
        self.wrap_timeout = wrap_timeout
        self._namespace = f"{app.name}:{prefix}"
        # "@" cannot appear in a name, so no data key can collide with it.
        self._gen_key = f"{self._namespace}@gen"
        self._gen: int | None = None
        self._flights = SingleFlight()
        self._near = near
        self._channel = wire_name("cache", store.alias, prefix)
        self._unsubscribe: Callable[[], Any] | None = None

    def __repr__(self) -> str:
        return (
            f"<Cache {self.name!r} prefix={self.prefix!r} store={self.store.alias!r} "
            f"app={self.app.name!r}>"
        )

    @property
    def near_cache(self) -> bool:
        return self._near is not None

    # keys and generations ------------------------------------------------------

    def _wire(self, gen: int, key: str) -> str:
        return f"{self._namespace}@{gen}:{key}"

    def _timeout(self, ttl: float | None) -> float | None:
        ttl = check_ttl(ttl)
        if ttl is None:
            ttl = self.default_ttl
            if ttl is None:
                return self.store.default_timeout
        return None if ttl == math.inf else ttl

    def _new_generation(self) -> int:
        token = new_token()
        if self.store.add(self._gen_key, token, None):
            return token
        # Another node created it first: theirs wins.
        theirs = self.store.fetch(self._gen_key, [])[0]
        return token if theirs is None else theirs

    def _generation(self) -> int:
        """The current generation, read from the store (one round trip)."""
        gen = self.store.fetch(self._gen_key, [])[0]
        if gen is None:
            gen = self._new_generation()
        self._gen = gen
        return gen

    def _fetch(self, keys: list[str]) -> tuple[int, list[Any]]:
        """The generation and the values of ``keys`` (``MISSING`` for a miss).

        One round trip for the generation key plus the keys under the last known
        generation; only when that generation is stale (a reset elsewhere) is the
        read repeated under the new one.
        """
        gen = self._gen
        for _ in range(5):
            wires = (
                [] if gen is None else [f"{self._namespace}@{gen}:{k}" for k in keys]
            )
            current, values = self.store.fetch(self._gen_key, wires)
            if current is None:
                current = self._new_generation()
            if current == gen:
                return current, values
            self._gen = gen = current
        # Resets faster than reads: report a miss under the newest generation.
        return current, [MISSING] * len(keys)

    def _fetch_one(self, key: str) -> tuple[int, Any]:
        """:meth:`_fetch` of one key, with the hit path kept short."""
        gen = self._gen
        if gen is not None:
            current, values = self.store.fetch(
                self._gen_key, [f"{self._namespace}@{gen}:{key}"]
            )
            if current == gen:
                return gen, values[0]
        gen, values = self._fetch([key])
        return gen, values[0]

    # near cache and invalidation -----------------------------------------------

    def _ensure_subscribed(self) -> None:
        if self._unsubscribe is None:
            near = self._near
            self._unsubscribe = self.app.pubsub_manager.subscribe(
                self._channel,
                self._on_invalidation,
                # Messages may have been lost (outage, overflow): trust nothing.
                on_gap=near.clear if near is not None else None,
            )

    def _on_invalidation(self, message: Any) -> None:
        if self._near is None:
            return
        if not isinstance(message, Mapping):
            logger.warning("cache %s: ignored invalid message %r", self.name, message)
            return
        if message.get("reset"):
            self._near.clear()
        else:
            self._near.invalidate(str(k) for k in message.get("keys", ()))

    def _changed(self, keys: list[str] | None) -> None:
        """Tell the other nodes' near caches (``None`` = the whole namespace)."""
        if self._near is None:
            return
        if keys is None:
            self._near.clear()
            message: dict[str, Any] = {"reset": True}
        else:
            self._near.invalidate(keys)
            message = {"keys": keys}
        self._ensure_subscribed()
        self.app.pubsub_manager.publish(self._channel, message, skip_self=True)

    def _near_get(self, key: str) -> tuple[Any, int]:
        near = self._near
        if near is None:
            return MISSING, 0
        self._ensure_subscribed()
        return near.get(key), near.epoch

    def _keep(self, key: str, value: Any, timeout: float | None) -> None:
        """Put a value this node just wrote into its own near cache."""
        if self._near is not None:
            self._near.put(key, value, timeout, self._near.epoch)

    def _near_put(self, key: str, value: Any, ttl: float | None, epoch: int) -> None:
        if self._near is not None:
            self._near.put(key, value, self._timeout(ttl), epoch)

    # the API ---------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key``, or ``default`` on a miss."""
        validate_name(key, "cache key")
        if self._near is None:  # the common case, kept short
            value = self._fetch_one(key)[1]
            return default if value is MISSING else value
        value, epoch = self._near_get(key)
        if value is not MISSING:
            return value
        value = self._fetch([key])[1][0]
        if value is MISSING:
            return default
        self._near_put(key, value, None, epoch)
        return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (default: the cache's)."""
        validate_name(key, "cache key")
        timeout = self._timeout(ttl)
        self.store.set(self._wire(self._generation(), key), value, timeout)
        self._changed([key])
        self._keep(key, value, timeout)

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is absent)."""
        validate_name(key, "cache key")
        self.store.delete_many([self._wire(self._generation(), key)])
        self._changed([key])

    def reset(self) -> None:
        """Forget every key of this namespace, on every node, in O(1).

        Other caches and anything else in the store are untouched; the old entries
        stay in the store until their TTL ends, unreadable.
        """
        token = new_token()
        self.store.set(self._gen_key, token, None)
        self._gen = token
        self._changed(None)

    def mget(self, keys: Iterable[str]) -> list[Any]:
        """The values of ``keys`` in order, ``None`` for a miss (one round trip)."""
        keys = [validate_name(k, "cache key") for k in keys]
        if not keys:
            return []
        near = self._near
        if near is None:
            return [None if v is MISSING else v for v in self._fetch(keys)[1]]
        self._ensure_subscribed()
        epoch = near.epoch
        local = {k: v for k in keys if (v := near.get(k)) is not MISSING}
        missing = [k for k in keys if k not in local]
        if missing:
            values = self._fetch(missing)[1]
            found = {
                k: v for k, v in zip(missing, values, strict=True) if v is not MISSING
            }
            for k, v in found.items():
                near.put(k, v, self._timeout(None), epoch)
            local.update(found)
        return [local.get(k) for k in keys]

    def mset(
        self,
        pairs: Mapping[str, Any] | Iterable[tuple[str, Any]],
        ttl: float | None = None,
    ) -> None:
        """Store many ``key -> value`` pairs with one ``set_many``."""
        items = dict(pairs.items() if isinstance(pairs, Mapping) else pairs)
        for key in items:
            validate_name(key, "cache key")
        if not items:
            return
        timeout = self._timeout(ttl)
        gen = self._generation()
        self.store.set_many({self._wire(gen, k): v for k, v in items.items()}, timeout)
        self._changed(list(items))

    def mdel(self, keys: Iterable[str]) -> None:
        """Remove many keys with one ``delete_many``."""
        keys = [validate_name(k, "cache key") for k in keys]
        if not keys:
            return
        gen = self._generation()
        self.store.delete_many([self._wire(gen, k) for k in keys])
        self._changed(keys)

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires: ``FOREVER`` (``math.inf``) when it
        never does, ``None`` when it is not cached."""
        validate_name(key, "cache key")
        return self.store.ttl(self._wire(self._generation(), key))

    def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``delta`` to the integer at ``key`` and return the result.

        A missing key starts from 0 and gets ``ttl`` (default: the cache's); an
        existing counter keeps its expiry. A non-integer value raises the store's
        error.
        """
        validate_name(key, "cache key")
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise TypeError(f"delta must be an int, got {delta!r}.")
        timeout = self._timeout(ttl)
        value = self.store.incr(self._wire(self._generation(), key), delta, timeout)
        self._changed([key])
        return value

    # wrap ------------------------------------------------------------------------

    def wrap(self, key: str, fn: Callable[[], Any], ttl: float | None = None) -> Any:
        """The cached value of ``key``, or ``fn()`` computed once and cached.

        On a miss one caller in the whole cluster runs ``fn``: callers in this
        process wait for the process's leader, and leaders of different nodes
        take the cluster lock ``cache:<store>:<prefix>:<key>`` from
        ``app.lock_manager``, re-read the cache once they hold it and compute only
        if it is still missing. A caller waits at most ``CACHE["WRAP_TIMEOUT"]``
        seconds and then computes itself. When ``fn`` raises, nothing is cached,
        the lock is released and the exception reaches the callers that waited in
        this process. On a store that is not shared (locmem) there is no cluster to
        coordinate and no lock is taken.
        """
        return self.wrap_with_condition(key, fn, ttl=ttl)

    def wrap_with_condition(
        self,
        key: str,
        fn: Callable[[], Any],
        *,
        use_cache: bool = True,
        is_cacheable: Callable[[Any], bool] | None = None,
        ttl: float | None = None,
    ) -> Any:
        """Like :meth:`wrap`; ``use_cache=False`` just returns ``fn()`` (no read,
        no write) and ``is_cacheable(value)`` returning False keeps a computed
        value out of the cache."""
        validate_name(key, "cache key")
        check_fn(fn)
        check_ttl(ttl)
        if not use_cache:
            return fn()
        return single_flight.wrap(self, key, fn, is_cacheable, ttl)

    def store_key(self, key: str) -> str:
        """The key ``key`` has in the store now (before the store's own KEY_PREFIX):
        ``<app>:<prefix>@<generation>:<key>``."""
        validate_name(key, "cache key")
        return self._wire(self._generation(), key)

    def lock_key(self, key: str) -> str:
        """The cluster lock key ``wrap`` takes for ``key``."""
        return wire_name("cache", self.store.alias, self.prefix, key)

    # async twins -----------------------------------------------------------------

    async def aget(self, key: str, default: Any = None) -> Any:
        return await in_thread(self.get)(key, default)

    async def aset(self, key: str, value: Any, ttl: float | None = None) -> None:
        await in_thread(self.set)(key, value, ttl)

    async def adelete(self, key: str) -> None:
        await in_thread(self.delete)(key)

    async def areset(self) -> None:
        await in_thread(self.reset)()

    async def amget(self, keys: Iterable[str]) -> list[Any]:
        return await in_thread(self.mget)(list(keys))

    async def amset(
        self,
        pairs: Mapping[str, Any] | Iterable[tuple[str, Any]],
        ttl: float | None = None,
    ) -> None:
        items = dict(pairs.items() if isinstance(pairs, Mapping) else pairs)
        await in_thread(self.mset)(items, ttl)

    async def amdel(self, keys: Iterable[str]) -> None:
        await in_thread(self.mdel)(list(keys))

    async def attl(self, key: str) -> float | None:
        return await in_thread(self.ttl)(key)

    async def aincr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        return await in_thread(self.incr)(key, delta, ttl)

    async def awrap(
        self, key: str, fn: Callable[[], Any], ttl: float | None = None
    ) -> Any:
        """:meth:`wrap` for coroutines; ``fn`` may be ``async def`` or plain."""
        return await self.awrap_with_condition(key, fn, ttl=ttl)

    async def awrap_with_condition(
        self,
        key: str,
        fn: Callable[[], Any],
        *,
        use_cache: bool = True,
        is_cacheable: Callable[[Any], bool] | None = None,
        ttl: float | None = None,
    ) -> Any:
        """:meth:`wrap_with_condition` for coroutines."""
        validate_name(key, "cache key")
        check_fn(fn)
        check_ttl(ttl)
        if not use_cache:
            return await acall(fn)
        return await single_flight.awrap(self, key, fn, is_cacheable, ttl)

    # lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Drop the near cache's subscription (the manager calls this at stop)."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            try:
                unsubscribe()
            except Exception:
                logger.exception("cache %s: unsubscribing failed", self.name)
        if self._near is not None:
            self._near.clear()

    def _after_fork(self) -> None:
        # The parent's subscription and in-flight computations are not ours.
        self._unsubscribe = None
        self._flights = SingleFlight()
        if self._near is not None:
            self._near.after_fork()
