"""Redis locks: one round trip per operation, fenced, FIFO waiters woken by BLPOP.

Keys of app ``A`` (``P`` is ``OPTIONS["KEY_PREFIX"]``, default ``mc``; the ``{A}``
hash tag keeps one app's keys in one Redis Cluster slot, scripts touch several)::

    P:{A}:L:<key>     hash: token, holder, fence, acquired_at, expires_at (PX ttl)
    P:{A}:Q:<key>     zset: waiter id -> arrival number (FIFO order)
    P:{A}:D:<key>     hash: waiter id -> place lease deadline (ms)
    P:{A}:W:<waiter>  list: wake-up tokens for one waiter (BLPOP)
    P:{A}:index       zset: key -> expires_at (ms), for list_locks()
    P:{A}:fence       counter shared by the app's keys
    P:{A}:seq         arrival counter of the queues

The fence counter is seeded from the server clock in microseconds the first time
it is used, so fences keep increasing even when Redis loses its data (restart
without persistence): a new counter starts above every fence handed out before.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ...exceptions import BackendUnavailable
from .base import WAITER_LEASE, WAITER_REFRESH, LockBackend, LockInfo

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function int(n) return string.format('%d', n) end
"""

# Pops dead waiters off the head of the queue and returns the live head, if any.
_HEAD = """
local function head(queue, places, wake_prefix)
  while true do
    local h = redis.call('ZRANGE', queue, 0, 0)[1]
    if not h then return false end
    if tonumber(redis.call('HGET', places, h) or '0') >= now then return h end
    redis.call('ZREM', queue, h)
    redis.call('HDEL', places, h)
    redis.call('DEL', wake_prefix .. h)
  end
end
local function wake_head(queue, places, wake_prefix, lease)
  local h = head(queue, places, wake_prefix)
  if h then
    redis.call('RPUSH', wake_prefix .. h, '1')
    redis.call('PEXPIRE', wake_prefix .. h, lease)
  end
end
"""

# KEYS: lock, queue, places, fence, seq, index
# ARGV: token, ttl_ms, holder, key, waiter ('' = do not queue), lease_ms, wake_prefix
# -> {1, fence} granted | {0, pttl} held (pttl -2: free, an older waiter goes first)
_ACQUIRE = (
    _NOW
    + _HEAD
    + """
local token, ttl, me, lease = ARGV[1], tonumber(ARGV[2]), ARGV[5], ARGV[6]
local current = redis.call('HMGET', KEYS[1], 'token', 'fence')
if current[1] == token then
  -- a retried call whose first reply was lost: it is already ours
  return {1, tonumber(current[2])}
end
if not current[1] then
  local h = head(KEYS[2], KEYS[3], ARGV[7])
  if (not h) or h == me then
    if h then
      redis.call('ZREM', KEYS[2], me)
      redis.call('HDEL', KEYS[3], me)
      redis.call('DEL', ARGV[7] .. me)
    end
    if redis.call('EXISTS', KEYS[4]) == 0 then
      redis.call('SET', KEYS[4], t[1] .. string.format('%06d', tonumber(t[2])))
    end
    local fence = redis.call('INCR', KEYS[4])
    redis.call('HSET', KEYS[1], 'token', token, 'holder', ARGV[3], 'fence', fence,
      'acquired_at', int(now), 'expires_at', int(now + ttl))
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('ZADD', KEYS[6], int(now + ttl), ARGV[4])
    return {1, fence}
  end
  -- free, and an older waiter goes first: nudge it in case its wake-up was lost
  redis.call('RPUSH', ARGV[7] .. h, '1')
  redis.call('PEXPIRE', ARGV[7] .. h, lease)
end
if me ~= '' then
  if redis.call('HEXISTS', KEYS[3], me) == 0 then
    redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), me)
  end
  redis.call('HSET', KEYS[3], me, int(now + tonumber(lease)))
  redis.call('PEXPIRE', KEYS[2], 2 * lease)
  redis.call('PEXPIRE', KEYS[3], 2 * lease)
end
if not current[1] then return {0, -2} end
return {0, redis.call('PTTL', KEYS[1])}
"""
)

# KEYS: lock, queue, places, index   ARGV: token ('' = any), key, wake_prefix, lease
_RELEASE = (
    _NOW
    + _HEAD
    + """
local holder = redis.call('HGET', KEYS[1], 'token')
if not holder or (ARGV[1] ~= '' and holder ~= ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[2])
wake_head(KEYS[2], KEYS[3], ARGV[3], ARGV[4])
return 1
"""
)

# KEYS: lock, index   ARGV: token, ttl_ms, key
_EXTEND = (
    _NOW
    + """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
local ttl = tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('HSET', KEYS[1], 'expires_at', int(now + ttl))
redis.call('ZADD', KEYS[2], int(now + ttl), ARGV[3])
return 1
"""
)

# KEYS: lock, queue, places   ARGV: waiter, wake_prefix, lease
_LEAVE = (
    _NOW
    + _HEAD
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', ARGV[2] .. ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  wake_head(KEYS[2], KEYS[3], ARGV[2], ARGV[3])
end
return 1
"""
)

# KEYS: index   ARGV: lock key prefix, places key prefix
_LIST = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(now))
local out = {}
for _, k in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local v = redis.call('HMGET', ARGV[1] .. k, 'holder', 'fence', 'acquired_at',
    'expires_at')
  if v[1] then
    local waiting = 0
    for _, d in ipairs(redis.call('HVALS', ARGV[2] .. k)) do
      if tonumber(d) >= now then waiting = waiting + 1 end
    end
    table.insert(out, {k, v[1], v[2], v[3], v[4], waiting})
  else
    redis.call('ZREM', KEYS[1], k)
  end
end
return out
"""
)


def _ms_to_datetime(value: Any):
    import datetime as dt

    return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLockBackend(LockBackend):
    """Locks in Redis, shared by every process that reaches the server.

    ``OPTIONS``: ``URL`` (``redis://…``) or ``CACHE`` (a ``CACHES`` alias using
    django-redis or Django's ``RedisCache``, whose connection pool is reused);
    ``KEY_PREFIX`` (default ``"mc"``); ``SOCKET_TIMEOUT`` seconds for our own
    connections (default 5, keep it above 1 s: waiters block up to 1 s per call).
    """

    requires: ClassVar[tuple[tuple[str, str], ...]] = (("redis", "redis"),)
    supports_notification: ClassVar[bool] = True

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        if not options.get("URL") and not options.get("CACHE"):
            return [
                f"{cls.__name__} needs OPTIONS['URL'] (redis://host:port/db) or "
                "OPTIONS['CACHE'] (the alias of a Redis cache in CACHES)."
            ]
        return []

    def __init__(self, app: Any, options: Mapping[str, Any]) -> None:
        super().__init__(app, options)
        prefix = self.options.get("KEY_PREFIX", "mc")
        self._base = f"{prefix}:{{{app.name}}}:"
        self._client_obj: Any = None
        self._scripts: dict[str, Any] = {}

    # connection ----------------------------------------------------------------------

    def _client(self) -> Any:
        if self._client_obj is None:
            self._client_obj = self._connect()
            for name, text in (
                ("acquire", _ACQUIRE),
                ("release", _RELEASE),
                ("extend", _EXTEND),
                ("leave", _LEAVE),
                ("list", _LIST),
            ):
                self._scripts[name] = self._client_obj.register_script(text)
        return self._client_obj

    def _connect(self) -> Any:
        import redis

        if self.options.get("CACHE"):
            from django.core.cache import caches

            cache = caches[self.options["CACHE"]]
            client = getattr(cache, "client", None)
            if client is not None and hasattr(client, "get_client"):  # django-redis
                return client.get_client(write=True)
            inner = getattr(cache, "_cache", None)
            if inner is not None and hasattr(inner, "get_client"):  # Django RedisCache
                return inner.get_client(write=True)
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured(
                f"MEGA_CLUSTER LOCKS OPTIONS['CACHE'] = {self.options['CACHE']!r} is "
                "not a Redis cache (django-redis or Django's RedisCache); point it "
                "at one or use OPTIONS['URL']."
            )
        timeout = float(self.options.get("SOCKET_TIMEOUT", 5.0))
        return redis.Redis.from_url(
            self.options["URL"],
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 2.0),
        )

    def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        import redis

        client = self._client()
        try:
            return self._scripts[name](keys=keys, args=args, client=client)
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
            raise BackendUnavailable(
                f"Redis lock backend of app {self.app.name!r} is unreachable: {exc}"
            ) from exc

    def _keys(self, key: str) -> tuple[str, str, str]:
        b = self._base
        return f"{b}L:{key}", f"{b}Q:{key}", f"{b}D:{key}"

    # contract ------------------------------------------------------------------------

    def acquire(
        self, key: str, token: str, ttl: float, wait: float, holder: str
    ) -> int | None:
        import redis

        lock, queue, places = self._keys(key)
        b = self._base
        waiter = token if wait > 0 else ""
        lease_ms = int(WAITER_LEASE * 1000)
        args = [token, max(1, int(ttl * 1000)), holder, key, waiter, lease_ms, f"{b}W:"]
        keys = [lock, queue, places, f"{b}fence", f"{b}seq", f"{b}index"]
        deadline = time.monotonic() + wait
        try:
            while True:
                granted, value = self._call("acquire", keys, args)
                if granted:
                    return int(value)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Woken by release/leave; the timeout refreshes our place in the
                # queue and catches a holder whose lease runs out without release.
                timeout = min(remaining, WAITER_REFRESH)
                if value > 0:
                    timeout = min(timeout, value / 1000 + 0.001)
                try:
                    self._client().blpop([f"{b}W:{waiter}"], timeout=max(timeout, 0.01))
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    raise BackendUnavailable(
                        f"Redis lock backend of app {self.app.name!r} is "
                        f"unreachable: {exc}"
                    ) from exc
        except BaseException:
            if waiter:
                self._quietly(
                    "leave", [lock, queue, places], [waiter, f"{b}W:", lease_ms]
                )
            # The grant may have happened with its reply lost: undo it.
            self._quietly(
                "release",
                [lock, queue, places, f"{b}index"],
                [token, key, f"{b}W:", lease_ms],
            )
            raise
        if waiter:
            self._call("leave", [lock, queue, places], [waiter, f"{b}W:", lease_ms])
        return None

    def _quietly(self, name: str, keys: list[str], args: list[Any]) -> None:
        try:
            self._call(name, keys, args)
        except Exception:  # best effort while already failing
            pass

    def release(self, key: str, token: str) -> bool:
        lock, queue, places = self._keys(key)
        b = self._base
        lease_ms = int(WAITER_LEASE * 1000)
        return bool(
            self._call(
                "release",
                [lock, queue, places, f"{b}index"],
                [token, key, f"{b}W:", lease_ms],
            )
        )

    def extend(self, key: str, token: str, ttl: float) -> bool:
        lock = self._keys(key)[0]
        args = [token, max(1, int(ttl * 1000)), key]
        return bool(self._call("extend", [lock, f"{self._base}index"], args))

    def force_release(self, key: str) -> bool:
        return self.release(key, "")

    def list_locks(self) -> list[LockInfo]:
        b = self._base
        rows = self._call("list", [f"{b}index"], [f"{b}L:", f"{b}D:"])
        out = [
            LockInfo(
                key=_text(k),
                holder=_text(holder),
                fence=int(fence),
                acquired_at=_ms_to_datetime(acquired),
                expires_at=_ms_to_datetime(expires),
                waiters=int(waiting),
            )
            for k, holder, fence, acquired, expires, waiting in rows
        ]
        return sorted(out, key=lambda info: info.key)

    def ping(self) -> None:
        import redis

        try:
            self._client().ping()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise BackendUnavailable(
                f"Redis lock backend of app {self.app.name!r} is unreachable: {exc}"
            ) from exc

    def stop(self) -> None:
        client, self._client_obj = self._client_obj, None
        self._scripts = {}
        if client is not None and not self.options.get("CACHE"):
            client.close()
