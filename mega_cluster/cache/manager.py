"""``app.cache_manager``: creates and owns the caches of one cluster app."""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING

from django.conf import settings

from .. import node
from ..exceptions import CacheNameTaken
from ..validation import validate_name
from .cache import Cache
from .common import check_ttl
from .near import NearCache
from .stores import Store, open_store

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.cache")

#: Name of the app's default cache (``app.cache``).
DEFAULT_CACHE = "default"

_live_caches: weakref.WeakSet[Cache] = weakref.WeakSet()


def _after_fork() -> None:
    for cache in list(_live_caches):
        cache.after_fork()


node.on_fork(_after_fork)


class CacheManager:
    """The caches of one cluster app, each a namespace in a Django cache store.

    Nothing connects when the manager or a cache is created; the store is
    reached on the first operation.
    """

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        self._caches: dict[str, Cache] = {}
        self._stores: dict[str, Store] = {}
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<CacheManager app={self.app.name!r} caches={sorted(self._caches)}>"

    def __contains__(self, name: object) -> bool:
        return name in self._caches

    def names(self) -> list[str]:
        """Names of the caches created so far."""
        return list(self._caches)

    @property
    def default_store(self) -> str:
        return self.app.settings.cache["DEFAULT_STORE"]

    def create_cache(
        self,
        name: str,
        *,
        prefix: str | None = None,
        store: str | None = None,
        ttl: float | None = None,
        shared: bool = False,
        near_cache: bool = False,
        near_ttl: float = 30.0,
        near_max_entries: int = 10_000,
    ) -> Cache:
        """Create the cache ``name`` with keys ``<app>:<prefix>:<key>``.

        ``prefix`` defaults to ``name``; ``store`` is a ``CACHES`` alias (default
        ``MEGA_CLUSTER["CACHE"]["DEFAULT_STORE"]``); ``ttl`` is the default
        lifetime in seconds of its entries (default ``CACHE["TTL"]``, and when
        that is ``None`` the store's ``TIMEOUT``; ``FOREVER``: no expiry). ``shared=True`` declares that other nodes must see what this
        cache holds (a warning is logged when its store is process-local under
        ``DEBUG=False``). ``near_cache=True`` keeps a per-process copy of read
        entries for at most ``near_ttl`` seconds (``near_max_entries`` of them),
        invalidated on every node through ``app.pubsub_manager``.

        Raises ``CacheNameTaken`` for a name already created in this app,
        ``InvalidName`` for a bad name or prefix, ``ConfigurationError`` for an
        unknown store alias and ``TypeError``/``ValueError`` for a bad ``ttl``.
        """
        validate_name(name, "cache name")
        prefix = validate_name(name if prefix is None else prefix, "cache prefix")
        if ttl is None:
            ttl = self.app.settings.cache["TTL"]
        ttl = check_ttl(ttl)
        check_ttl(near_ttl, "near_ttl")
        if isinstance(near_max_entries, bool) or not isinstance(near_max_entries, int):
            raise TypeError(
                f"near_max_entries must be an int, got {near_max_entries!r}."
            )
        if near_max_entries < 1:
            raise ValueError(f"near_max_entries must be >= 1, got {near_max_entries}.")
        alias = self.default_store if store is None else store
        if not isinstance(alias, str):
            raise TypeError(f"store must be a CACHES alias, got {alias!r}.")
        with self._lock:
            if name in self._caches:
                raise CacheNameTaken(
                    f"Cluster app {self.app.name!r} already has a cache named {name!r}; "
                    "pick another name or use get_cache(name)."
                )
            backend = self._store(alias)
            if shared and not backend.shared and not settings.DEBUG:
                logger.warning(
                    "cache %s is declared shared but its store %r (%s) is local to "
                    "each process: other nodes will not see its entries or resets",
                    name,
                    alias,
                    backend.backend_path,
                )
            near = (
                NearCache(max_age=near_ttl, max_entries=near_max_entries)
                if near_cache
                else None
            )
            cache = Cache(
                self.app,
                name=name,
                prefix=prefix,
                store=backend,
                ttl=ttl,
                shared=shared,
                near=near,
                wrap_timeout=self.app.settings.cache["WRAP_TIMEOUT"],
            )
            self._caches[name] = cache
            _live_caches.add(cache)
            return cache

    def get_cache(self, name: str) -> Cache:
        """The cache created as ``name``; ``KeyError`` when there is none."""
        try:
            return self._caches[name]
        except KeyError:
            raise KeyError(
                f"Cluster app {self.app.name!r} has no cache named {name!r}; "
                f"created: {', '.join(self._caches) or 'none'}."
            ) from None

    @property
    def default(self) -> Cache:
        """The app's default cache (``app.cache``), named ``"default"``."""
        cache = self._caches.get(DEFAULT_CACHE)
        if cache is not None:
            return cache
        with self._lock:
            if DEFAULT_CACHE not in self._caches:
                self.create_cache(DEFAULT_CACHE)
            return self._caches[DEFAULT_CACHE]

    def store(self, alias: str) -> Store:
        """The store of ``CACHES[alias]`` shared by this app's caches (built on
        first use, no connection made); ``ConfigurationError`` for an unknown alias."""
        with self._lock:
            return self._store(alias)

    def stores(self) -> dict[str, Store]:
        """The stores in use so far, by alias."""
        with self._lock:
            return dict(self._stores)

    def _store(self, alias: str) -> Store:
        store = self._stores.get(alias)
        if store is None:
            store = self._stores[alias] = open_store(alias, self.app)
        return store

    def start(self) -> None:
        """Nothing to start: stores connect on first use."""

    def stop(self) -> None:
        """Unsubscribe the near caches and close the stores."""
        with self._lock:
            for cache in self._caches.values():
                cache.close()
            for store in self._stores.values():
                try:
                    store.close()
                except Exception:
                    logger.exception("closing cache store %r failed", store.alias)
