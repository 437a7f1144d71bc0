"""The :class:`Cache`: one namespace in one store (SPEC section 6, Cache)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ..calls import acall
from ..validation import MAX_DELTA, validate_count, validate_name
from . import wrap as single_flight
from .common import check_fn, check_ttl, in_thread, wire_name
from .namespace import Namespace
from .near import MISSING, NearCache

if TYPE_CHECKING:
    from ..registry import ClusterApp
    from .stores import Store


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
        self.shared = shared
        self.wrap_timeout = wrap_timeout
        #: wire keys, generations, reads and writes, near-cache coherence
        #: (internal: shared with ``wrap``).
        self.namespace = Namespace(
            app, name=name, prefix=prefix, store=store, ttl=ttl, near=near
        )
        # Read by the near-cache tests; the namespace owns it.
        self._near = near

    def __repr__(self) -> str:
        return (
            f"<Cache {self.name!r} prefix={self.prefix!r} store={self.store.alias!r} "
            f"app={self.app.name!r}>"
        )

    @property
    def near_cache(self) -> bool:
        return self.namespace.near is not None

    @property
    def default_ttl(self) -> float | None:
        """The ``ttl`` of calls that pass none (None: the store's own default)."""
        return self.namespace.default_ttl

    @property
    def _unsubscribe(self) -> Callable[[], Any] | None:
        # Read by the near-cache fork test; the namespace owns the subscription.
        return self.namespace.subscription

    # the API ---------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key``, or ``default`` on a miss."""
        validate_name(key, "cache key")
        ns = self.namespace
        if ns.near is None:  # the common case, kept short
            value = ns.fetch_one(key)[1]
            return default if value is MISSING else value
        value, epoch = ns.near_get(key)
        if value is not MISSING:
            return value
        value = ns.fetch([key])[1][0]
        if value is MISSING:
            return default
        ns.near_put(key, value, None, epoch)
        return value

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (default: the cache's)."""
        validate_name(key, "cache key")
        ns = self.namespace
        timeout = ns.timeout(ttl)
        self.store.set(ns.wire(ns.generation(), key), value, timeout)
        ns.changed([key])
        ns.keep(key, value, timeout)

    def delete(self, key: str) -> None:
        """Remove ``key`` (no error when it is absent)."""
        validate_name(key, "cache key")
        ns = self.namespace
        self.store.delete_many([ns.wire(ns.generation(), key)])
        ns.changed([key])

    def reset(self) -> None:
        """Forget every key of this namespace, on every node, in O(1).

        Other caches and anything else in the store are untouched; the old entries
        stay in the store until their TTL ends, unreadable.
        """
        self.namespace.reset()

    def mget(self, keys: Iterable[str], default: Any = None) -> list[Any]:
        """The values of ``keys`` in order, ``default`` for a miss (one round trip).

        As with :meth:`get`, a cached ``None`` and a miss look alike under the
        default ``default=None``; pass a sentinel to tell them apart::

            MISS = object()
            values = cache.mget(keys, default=MISS)
        """
        keys = [validate_name(k, "cache key") for k in keys]
        if not keys:
            return []
        ns = self.namespace
        near = ns.near
        if near is None:
            return [default if v is MISSING else v for v in ns.fetch(keys)[1]]
        epoch = ns.near_epoch()
        local = {k: v for k in keys if (v := near.get(k)) is not MISSING}
        missing = [k for k in keys if k not in local]
        if missing:
            values = ns.fetch(missing)[1]
            found = {
                k: v for k, v in zip(missing, values, strict=True) if v is not MISSING
            }
            for k, v in found.items():
                ns.near_put(k, v, None, epoch)
            local.update(found)
        return [local.get(k, default) for k in keys]

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
        ns = self.namespace
        timeout = ns.timeout(ttl)
        gen = ns.generation()
        self.store.set_many({ns.wire(gen, k): v for k, v in items.items()}, timeout)
        ns.changed(list(items))

    def mdel(self, keys: Iterable[str]) -> None:
        """Remove many keys with one ``delete_many``."""
        keys = [validate_name(k, "cache key") for k in keys]
        if not keys:
            return
        ns = self.namespace
        gen = ns.generation()
        self.store.delete_many([ns.wire(gen, k) for k in keys])
        ns.changed(keys)

    def ttl(self, key: str) -> float | None:
        """Seconds left before ``key`` expires: ``FOREVER`` (``math.inf``) when it
        never does, ``None`` when it is not cached."""
        validate_name(key, "cache key")
        ns = self.namespace
        return self.store.ttl(ns.wire(ns.generation(), key))

    def incr(self, key: str, delta: int = 1, ttl: float | None = None) -> int:
        """Atomically add ``delta`` to the integer at ``key`` and return the result.

        A missing key starts from 0 and gets ``ttl`` (default: the cache's); an
        existing counter keeps its expiry. A non-integer value raises the store's
        error.
        """
        validate_name(key, "cache key")
        validate_count(delta, "delta", minimum=-MAX_DELTA, maximum=MAX_DELTA)
        ns = self.namespace
        timeout = ns.timeout(ttl)
        value = self.store.incr(ns.wire(ns.generation(), key), delta, timeout)
        ns.changed([key])
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
        ``{<app>:<prefix>}@<generation>:<key>``."""
        validate_name(key, "cache key")
        ns = self.namespace
        return ns.wire(ns.generation(), key)

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

    async def amget(self, keys: Iterable[str], default: Any = None) -> list[Any]:
        return await in_thread(self.mget)(list(keys), default)

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
        self.namespace.close()

    def after_fork(self) -> None:
        """In a forked child (the manager calls this): forget the parent's
        subscription and in-flight computations."""
        self.namespace.after_fork()
