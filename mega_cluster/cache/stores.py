"""Adapters over Django cache backends (a store is a ``CACHES`` alias).

Everything a :class:`~mega_cluster.cache.Cache` needs goes through the Django cache
API (``get_many``, ``set_many``, ``add``, ``delete_many``), so any backend works.
Two things that API lacks get a per-backend implementation: the time left on a key
(``ttl``) and an atomic create-or-increment counter (``incr``). Redis-backed stores
(Django's own ``RedisCache`` and django-redis) do both with one server command.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from django.core.cache import caches
from django.core.cache.backends.base import BaseCache, InvalidCacheBackendError
from django.core.exceptions import ImproperlyConfigured

from ..backends import PING_TIMEOUT
from ..circuit import Circuit, guard
from ..circuit import settings_of as circuit_settings
from ..exceptions import BackendUnavailable, ConfigurationError
from .near import MISSING

#: Backends whose data lives in one process: nothing they hold is seen by other nodes.
NON_SHARED_BACKENDS = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)

# INCRBY then, when the key has no expiry yet (it was just created), set one.
_INCR_SCRIPT = """
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' and redis.call('PTTL', KEYS[1]) == -1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
"""


def _driver_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = []
    try:
        import redis.exceptions

        errors += [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError]
    except ImportError:  # pragma: no cover - redis is an optional extra
        pass
    try:
        from django_redis.exceptions import ConnectionInterrupted

        errors.append(ConnectionInterrupted)
    except ImportError:  # pragma: no cover
        pass
    return tuple(errors)


DRIVER_ERRORS = _driver_errors()
PING_ERRORS: tuple[type[BaseException], ...] = (*DRIVER_ERRORS, OSError)
F = TypeVar("F", bound=Callable[..., Any])


def _translated(method: F) -> F:
    """Raise ``BackendUnavailable`` (driver error as ``__cause__``) when the
    server cannot be reached."""

    @functools.wraps(method)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except DRIVER_ERRORS as exc:
            raise self.unavailable(exc) from exc

    return wrapper  # type: ignore[return-value]


def _path(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class Store:
    """One Django cache backend instance, shared by every cache on that alias.

    The instance is built once (``caches.create_connection``) and used from every
    thread: Django's Redis backends, django-redis, locmem, the database and the
    pymemcache backends are thread-safe, and skipping the per-thread ``caches[...]``
    lookup keeps the hit path short. Time is given in seconds (float); ``None``
    means never expires.
    """

    #: Whole seconds only: sub-second TTLs are rounded up, never down to "expire now".
    whole_seconds = False
    #: Set by :func:`open_store`.
    circuit: Circuit

    def __init__(self, alias: str, backend: BaseCache, backend_path: str) -> None:
        self.alias = alias
        self.backend = backend
        self.backend_path = backend_path
        #: ``CACHES[alias]["TIMEOUT"]`` in seconds (``None``: never expires).
        self.default_timeout: float | None = backend.default_timeout
        self.shared = not any(
            _path(base) in NON_SHARED_BACKENDS for base in type(backend).__mro__
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.alias!r} ({self.backend_path})>"

    def unavailable(self, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"Cache store {self.alias!r} ({self.backend_path}) is unreachable: {exc}"
        )

    def timeout(self, ttl: float | None) -> float | None:
        if ttl is None:
            return None
        return math.ceil(ttl) if self.whole_seconds else ttl

    @_translated
    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return self.backend.get_many(keys)

    @_translated
    def fetch(self, gen_key: str, keys: list[str]) -> tuple[Any, list[Any]]:
        """The value at ``gen_key`` (``None`` when absent) and those of ``keys``
        (``MISSING`` when absent), read together (one round trip on Redis)."""
        found = self.backend.get_many([gen_key, *keys])
        return found.get(gen_key), [found.get(k, MISSING) for k in keys]

    @_translated
    def set(self, key: str, value: Any, ttl: float | None) -> None:
        self.backend.set(key, value, self.timeout(ttl))

    @_translated
    def set_many(self, data: Mapping[str, Any], ttl: float | None) -> None:
        failed = self.backend.set_many(dict(data), self.timeout(ttl))
        if failed:
            raise BackendUnavailable(
                f"Cache store {self.alias!r} did not store keys {failed[:5]!r}."
            )

    @_translated
    def add(self, key: str, value: Any, ttl: float | None) -> bool:
        return self.backend.add(key, value, self.timeout(ttl))

    @_translated
    def delete_many(self, keys: Iterable[str]) -> None:
        self.backend.delete_many(list(keys))

    @_translated
    def incr(self, key: str, delta: int, ttl: float | None) -> int:
        """Add ``delta`` to the integer at ``key``, creating it at ``delta``."""
        for _ in range(5):
            try:
                return self.backend.incr(key, delta)
            except ValueError:
                # Missing: create it; lost the race to another creator: incr again.
                if self.backend.add(key, delta, self.timeout(ttl)):
                    return delta
        raise BackendUnavailable(
            f"Cache store {self.alias!r}: counter {key!r} kept vanishing during incr."
        )

    @_translated
    def ttl(self, key: str) -> float | None:
        raise NotImplementedError(
            f"Cache store {self.alias!r} ({self.backend_path}) cannot report the time "
            "left on a key; use a Redis or locmem store for ttl()."
        )

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """Raise ``BackendUnavailable`` when the store does not answer (Redis
        stores: within ``timeout`` seconds; others read one key)."""
        try:
            self.backend.get("mega_cluster:health")
        except BackendUnavailable:
            raise
        except Exception as exc:
            # Cache clients raise their own errors (pymemcache, database errors…);
            # any of them means the store did not answer.
            raise self.unavailable(exc) from exc

    def close(self) -> None:
        self.backend.close()
        self.circuit.reset()


class LocMemStore(Store):
    @_translated
    def ttl(self, key: str) -> float | None:
        backend: Any = self.backend
        made = backend.make_key(key)
        # LocMemCache has no public expiry read: its _lock, _cache and _expire_info
        # (unchanged since Django 3.2) are the only way to answer ttl().
        with backend._lock:  # noqa: SLF001 - see above
            if made not in backend._cache or backend._has_expired(made):  # noqa: SLF001
                return None
            expires = backend._expire_info.get(made)  # noqa: SLF001
        return math.inf if expires is None else max(0.0, expires - time.time())


class _RedisStore(Store):
    """Shared logic of the two Redis backends: raw client for PTTL and INCRBY."""

    def raw_client(self, key: str | None, *, write: bool) -> Any:
        raise NotImplementedError

    def decode(self, raw: bytes) -> Any:
        raise NotImplementedError

    def fetch(self, gen_key: str, keys: list[str]) -> tuple[Any, list[Any]]:
        # The hit path: one MGET and the backend's own decoder, without the
        # backend's per-call bookkeeping; this keeps get/wrap close to a direct get.
        make_key = self.backend.make_key
        try:
            raw = self.raw_client(None, write=False).mget(
                [make_key(gen_key), *[make_key(k) for k in keys]]
            )
        except DRIVER_ERRORS as exc:
            raise self.unavailable(exc) from exc
        gen = raw[0]
        if gen is not None:
            # Generations are ints, which both backends store as plain digits.
            gen = int(gen) if gen.isdigit() else self.decode(gen)
        decode = self.decode
        return gen, [MISSING if v is None else decode(v) for v in raw[1:]]

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        from ..redis_client import ping

        try:
            ping(self.raw_client(None, write=False), timeout)
        except PING_ERRORS as exc:
            raise self.unavailable(exc) from exc

    @_translated
    def ttl(self, key: str) -> float | None:
        made = self.backend.make_key(key)
        left = self.raw_client(made, write=False).pttl(made)
        if left == -2:
            return None
        return math.inf if left == -1 else left / 1000.0

    @_translated
    def incr(self, key: str, delta: int, ttl: float | None) -> int:
        made = self.backend.make_key(key)
        timeout = self.timeout(ttl)
        millis = "" if timeout is None else str(max(1, int(timeout * 1000)))
        client = self.raw_client(made, write=True)
        return int(client.eval(_INCR_SCRIPT, 1, made, delta, millis))


class DjangoRedisStore(_RedisStore):
    """Django's own ``django.core.cache.backends.redis.RedisCache``."""

    # It truncates timeouts with int(): 0.5 s would become "delete now".
    whole_seconds = True

    def raw_client(self, key: str | None, *, write: bool) -> Any:
        # RedisCache exposes no client: its _cache (a RedisCacheClient) holds it.
        return self.backend._cache.get_client(key, write=write)  # type: ignore[attr-defined]  # noqa: SLF001

    def decode(self, raw: bytes) -> Any:
        # the same pickling the backend reads and writes with (no public decoder)
        return self.backend._cache._serializer.loads(raw)  # type: ignore[attr-defined]  # noqa: SLF001


class DjangoRedisPackageStore(_RedisStore):
    """django-redis's ``django_redis.cache.RedisCache`` (millisecond timeouts)."""

    def raw_client(self, key: str | None, *, write: bool) -> Any:
        return self.backend.client.get_client(write=write)  # type: ignore[attr-defined]

    def decode(self, raw: bytes) -> Any:
        return self.backend.client.decode(raw)  # type: ignore[attr-defined]


STORE_CLASSES: dict[str, type[Store]] = {
    "django.core.cache.backends.locmem.LocMemCache": LocMemStore,
    "django.core.cache.backends.redis.RedisCache": DjangoRedisStore,
    "django_redis.cache.RedisCache": DjangoRedisPackageStore,
}


def backend_path(alias: str) -> str:
    """The ``BACKEND`` of ``CACHES[alias]``; ``ConfigurationError`` when unknown."""
    from django.conf import settings

    configured = getattr(settings, "CACHES", {}) or {}
    if alias not in configured:
        raise ConfigurationError(
            f"Cache store {alias!r} is not a CACHES alias; configured: "
            f"{', '.join(configured) or '(none)'}. Add it to CACHES or pass one of "
            "those as store=."
        )
    return str(configured[alias].get("BACKEND", ""))


#: The methods of a store that reach the server, run through its circuit.
GUARDED = ("get_many", "fetch", "set", "set_many", "add", "delete_many", "incr", "ttl")


def open_store(alias: str, app: Any = None) -> Store:
    """Build the adapter for ``CACHES[alias]`` (no connection is made yet); its
    calls run through a circuit named ``cache:<alias>`` of ``app``."""
    store = _build(alias)
    store.circuit = Circuit(
        getattr(app, "name", "?"),
        f"cache:{alias}",
        probe=functools.partial(type(store).ping, store),
        **circuit_settings(app),
    )
    guard(store, GUARDED, store.circuit)
    return store


def _build(alias: str) -> Store:
    path = backend_path(alias)
    try:
        backend = caches.create_connection(alias)
    except (InvalidCacheBackendError, ImproperlyConfigured, ImportError) as exc:
        raise ConfigurationError(
            f"Cache store {alias!r} ({path}) cannot be built: {exc}"
        ) from exc
    cls = STORE_CLASSES.get(path)
    if cls is None:
        # A subclass of a known backend keeps its adapter.
        for base in type(backend).__mro__:
            cls = STORE_CLASSES.get(_path(base))
            if cls is not None:
                break
    return (cls or Store)(alias, backend, path)
