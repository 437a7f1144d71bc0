"""Redis locks: one round trip per operation, fenced, FIFO waiters woken by BLPOP.

Keys of app ``A`` (``P`` is ``OPTIONS["KEY_PREFIX"]``, default ``mc``; the ``{A}``
hash tag keeps one app's keys in one Redis Cluster slot, scripts touch several)::

    P:{A}:L:<key>     hash: token, holder, fence, acquired_at (PX ttl)
    P:{A}:Q:<key>     zset: waiter id -> arrival number (FIFO order)
    P:{A}:D:<key>     hash: waiter id -> place lease deadline (ms)
    P:{A}:W:<waiter>  list: wake-up tokens for one waiter (BLPOP)
    P:{A}:index       set: keys held (pruned lazily), for list_locks()
    P:{A}:fence       counter shared by the app's keys
    P:{A}:seq         arrival counter of the queues

The fence counter is seeded from the server clock in microseconds the first time
it is used, so fences keep increasing even when Redis loses its data (restart
without persistence): a new counter starts above every fence handed out before.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ... import redis_client
from ...backends import PING_TIMEOUT
from ...exceptions import BackendUnavailable
from ...redis_client import DirectConnections
from .base import WAITER_LEASE, WAITER_REFRESH, LockBackend, LockInfo

KEY_PREFIX_RE = re.compile(r"\A[A-Za-z0-9_.:-]{1,50}\Z")

# Each backend registers its scripts with its key base ("P:{A}:") written in
# (BASE), and every script derives the other key names from KEYS[1] = base .. "L:"
# .. key: fewer arguments to encode and send per call. The server clock (TIME
# costs as much as the rest of an uncontended acquire) is read only on the paths
# that need it: queued waiters, fence seeding, list_locks.
_KEYS = """
local base = 'BASE'
local lock = KEYS[1]
local key = string.sub(lock, #base + 3)
local queue, places = base .. 'Q:' .. key, base .. 'D:' .. key
local wake_prefix, lease = base .. 'W:', LEASE_MS
local now = false
local function clock()
  if not now then
    local t = redis.call('TIME')
    now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return now
end
"""

# Pops dead waiters off the head of the queue and returns the live head, if any.
_HEAD = """
local function head()
  while true do
    local h = redis.call('ZRANGE', queue, 0, 0)[1]
    if not h then return false end
    if tonumber(redis.call('HGET', places, h) or '0') >= clock() then return h end
    redis.call('ZREM', queue, h)
    redis.call('HDEL', places, h)
    redis.call('DEL', wake_prefix .. h)
  end
end
local function wake_head()
  local h = head()
  if h then
    redis.call('RPUSH', wake_prefix .. h, '1')
    redis.call('PEXPIRE', wake_prefix .. h, lease)
  end
end
"""

# KEYS: lock   ARGV: token, ttl_ms, holder, waiter ('' = do not queue), acquired_at
# -> fence (> 0) granted | -pttl (< 0) held | 0 free, but an older waiter goes first
# (one integer: the cheapest reply to send and parse)
_ACQUIRE = (
    _KEYS
    + _HEAD
    + """
local token, me = ARGV[1], ARGV[4]
local current = redis.call('HGET', lock, 'token')
if current == token then
  -- a retried call whose first reply was lost: it is already ours
  return tonumber(redis.call('HGET', lock, 'fence'))
end
if not current then
  local h = head()
  if (not h) or h == me then
    if h then
      redis.call('ZREM', queue, me)
      redis.call('HDEL', places, me)
      redis.call('DEL', wake_prefix .. me)
    end
    local fence_key = base .. 'fence'
    local fence = redis.call('INCR', fence_key)
    if fence == 1 then  -- a new (or lost) counter: seed it from the clock
      local t = redis.call('TIME')
      redis.call('SET', fence_key, t[1] .. string.format('%06d', tonumber(t[2])))
      fence = redis.call('INCR', fence_key)
    end
    redis.call('HSET', lock, 'token', token, 'holder', ARGV[3], 'fence', fence,
      'acquired_at', ARGV[5])
    redis.call('PEXPIRE', lock, ARGV[2])
    redis.call('SADD', base .. 'index', key)
    return fence
  end
  -- free, and an older waiter goes first: nudge it in case its wake-up was lost
  redis.call('RPUSH', wake_prefix .. h, '1')
  redis.call('PEXPIRE', wake_prefix .. h, lease)
end
if me ~= '' then
  if redis.call('HEXISTS', places, me) == 0 then
    redis.call('ZADD', queue, redis.call('INCR', base .. 'seq'), me)
  end
  redis.call('HSET', places, me, string.format('%d', clock() + lease))
  redis.call('PEXPIRE', queue, 2 * lease)
  redis.call('PEXPIRE', places, 2 * lease)
end
if not current then return 0 end
local pttl = redis.call('PTTL', lock)
if pttl > 0 then return -pttl end
return 0
"""
)

# KEYS: lock   ARGV: token ('' = whoever holds it)[, fence the lease must have]
_RELEASE = (
    _KEYS
    + _HEAD
    + """
local holder = redis.call('HGET', lock, 'token')
if not holder or (ARGV[1] ~= '' and holder ~= ARGV[1]) then return 0 end
if ARGV[2] and redis.call('HGET', lock, 'fence') ~= ARGV[2] then return 0 end
redis.call('DEL', lock)
redis.call('SREM', base .. 'index', key)
wake_head()
return 1
"""
)

# KEYS: lock   ARGV: token, ttl_ms
_EXTEND = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lock   ARGV: waiter
_LEAVE = (
    _KEYS
    + _HEAD
    + """
redis.call('ZREM', queue, ARGV[1])
redis.call('HDEL', places, ARGV[1])
redis.call('DEL', wake_prefix .. ARGV[1])
if redis.call('EXISTS', lock) == 0 then wake_head() end
return 1
"""
)

# KEYS: index  -> {key, holder, fence, acquired_at, expires_at, waiters}
_LIST = """
local base = 'BASE'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for _, k in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local lock = base .. 'L:' .. k
  local v = redis.call('HMGET', lock, 'holder', 'fence', 'acquired_at')
  local pttl = redis.call('PTTL', lock)
  if v[1] and pttl > 0 then
    local waiting = 0
    for _, d in ipairs(redis.call('HVALS', base .. 'D:' .. k)) do
      if tonumber(d) >= now then waiting = waiting + 1 end
    end
    table.insert(out, {k, v[1], v[2], v[3], string.format('%d', now + pttl),
      waiting})
  elseif not v[1] then
    redis.call('SREM', KEYS[1], k)
  end
end
return out
"""


_SCRIPT_TEXTS = {
    "acquire": _ACQUIRE,
    "release": _RELEASE,
    "extend": _EXTEND,
    "leave": _LEAVE,
    "list": _LIST,
}


def _ms_to_datetime(value: Any):
    import datetime as dt

    return dt.datetime.fromtimestamp(int(value) / 1000, dt.UTC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLockBackend(LockBackend):
    """Locks in Redis, shared by every process that reaches the server.

    ``OPTIONS``: where Redis is, as :mod:`mega_cluster.redis_client` reads it
    (``URL`` ``redis://…`` or ``sentinel://…``, ``SENTINELS`` + ``SERVICE_NAME``,
    ``CACHE``: a ``CACHES`` alias whose client is reused, ``CLUSTER``);
    ``KEY_PREFIX`` (default ``"mc"``); ``SOCKET_TIMEOUT`` seconds for our own
    connections (default 5, keep it above 1 s: waiters block up to 1 s per call).

    ``STRICT`` (default False): every grant and extension is acknowledged by
    ``REPLICAS`` replicas (default 1) within ``REPLICA_TIMEOUT`` seconds (default
    1.0), by ``WAIT`` on the same connection, or it fails closed (the grant is undone
    and ``BackendUnavailable`` raised; an unacknowledged extension does not count).
    With every replica Sentinel may promote acknowledging, a failover neither repeats
    a fence nor grants a live lease again (docs/deployment.md, Redis Sentinel).
    """

    requires: ClassVar[tuple[tuple[str, str], ...]] = (("redis", "redis"),)
    supports_notification: ClassVar[bool] = True

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> list[str]:
        prefix = options.get("KEY_PREFIX", "mc")
        if not isinstance(prefix, str) or not KEY_PREFIX_RE.match(prefix):
            return [
                f"OPTIONS['KEY_PREFIX'] must be 1-50 characters of letters, digits "
                f"and _ . : -, got {prefix!r}."
            ]
        problems = redis_client.check_options(options, cls.__name__)
        strict = options.get("STRICT", False)
        replicas = options.get("REPLICAS", 1)
        timeout = options.get("REPLICA_TIMEOUT", 1.0)
        if not isinstance(strict, bool):
            problems.append(f"OPTIONS['STRICT'] must be True or False, got {strict!r}.")
        elif strict and options.get("CLUSTER"):
            problems.append(
                "OPTIONS['STRICT'] is not available on a Redis Cluster "
                "(OPTIONS['CLUSTER']): use Sentinel or one server with replicas."
            )
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 1:
            problems.append(
                f"OPTIONS['REPLICAS'] must be a whole number >= 1, got {replicas!r}."
            )
        if (
            not isinstance(timeout, (int, float))
            or isinstance(timeout, bool)
            or not 0 < timeout <= 60
        ):
            problems.append(
                f"OPTIONS['REPLICA_TIMEOUT'] must be seconds in (0, 60], got {timeout!r}."
            )
        return problems

    def __init__(self, app: Any, options: Mapping[str, Any]) -> None:
        super().__init__(app, options)
        prefix = self.options.get("KEY_PREFIX", "mc")
        self._base = f"{prefix}:{{{app.name}}}:"
        self._client_obj: Any = None
        self._direct: Any = None
        # STRICT: (replicas, timeout in ms) every grant and extension waits for
        self._wait: tuple[int, int] | None = None
        if self.options.get("STRICT"):
            self._wait = (
                int(self.options.get("REPLICAS", 1)),
                max(1, int(float(self.options.get("REPLICA_TIMEOUT", 1.0)) * 1000)),
            )
        # name -> (SHA1, text): the key base is written into each script
        self._scripts: dict[str, tuple[str, str]] = {}
        for name, text in _SCRIPT_TEXTS.items():
            text = text.replace("LEASE_MS", str(int(WAITER_LEASE * 1000)))
            text = text.replace("BASE", self._base)  # checked: no quotes
            self._scripts[name] = (
                hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest(),
                text,
            )

    # connection ----------------------------------------------------------------------

    def _client(self) -> Any:
        """The redis-py client (blocking waits, ping); scripts run on ``_direct``."""
        if self._client_obj is None:
            client = self._connect()
            try:
                redis_client.refuse_cluster_node(
                    client, f"MEGA_CLUSTER app {self.app.name!r} LOCKS OPTIONS"
                )
            except Exception:
                if redis_client.owns_client(self.options):
                    client.close()
                raise
            # A CACHES client may have no socket timeout: ours for its scripts.
            timeout = float(self.options.get("SOCKET_TIMEOUT", 5.0))
            self._direct = DirectConnections(client, timeout=timeout)
            self._client_obj = client
        return self._client_obj

    def _connect(self) -> Any:
        timeout = float(self.options.get("SOCKET_TIMEOUT", 5.0))
        return redis_client.sync_client(
            self.options,
            socket_timeout=timeout,
            socket_connect_timeout=min(timeout, 2.0),
        )

    def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        import redis

        sha, text = self._scripts[name]
        try:
            direct = self._direct
            if direct is None:
                self._client()  # connects (and refuses a cluster node): may raise
                direct = self._direct
            if self._wait is None or name not in ("acquire", "extend"):
                return direct.script(sha, text, keys, args)
            reply, acked = direct.script_and_wait(sha, text, keys, args, *self._wait)
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
            raise BackendUnavailable(
                f"Redis lock backend of app {self.app.name!r} is unreachable: {exc}"
            ) from exc
        replicas, timeout_ms = self._wait
        if reply > 0 and acked < replicas:
            # fail closed: a grant or extension the replicas may not have is
            # one a failover can undo
            # (acquire undoes its grant on the way out)
            raise BackendUnavailable(
                f"Redis lock backend of app {self.app.name!r} (STRICT): {acked} of "
                f"{replicas} replica(s) acknowledged the {name} within {timeout_ms} "
                "ms; it does not count (OPTIONS['REPLICAS'], ['REPLICA_TIMEOUT'])."
            )
        return reply

    # contract ------------------------------------------------------------------------

    def acquire(
        self, key: str, token: str, ttl: float, wait: float, holder: str
    ) -> int | None:
        import redis

        b = self._base
        lock = f"{b}L:{key}"
        waiter = token if wait > 0 else ""
        args = [token, max(1, int(ttl * 1000)), holder, waiter, int(time.time() * 1000)]
        deadline = time.monotonic() + wait
        try:
            while True:
                value = self._call("acquire", [lock], args)
                if value > 0:
                    return int(value)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Woken by release/leave; the timeout refreshes our place in the
                # queue and catches a holder whose lease runs out without release.
                timeout = min(remaining, WAITER_REFRESH)
                if value < 0:  # held: its lease ends in -value ms at the latest
                    timeout = min(timeout, -value / 1000 + 0.001)
                try:
                    self._client().blpop([f"{b}W:{waiter}"], timeout=max(timeout, 0.01))
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    raise BackendUnavailable(
                        f"Redis lock backend of app {self.app.name!r} is "
                        f"unreachable: {exc}"
                    ) from exc
        except BaseException:
            if waiter:
                self._quietly("leave", [lock], [waiter])
            # The grant may have happened with its reply lost: undo it.
            self._quietly("release", [lock], [token])
            raise
        if waiter:
            self._call("leave", [lock], [waiter])
        return None

    def _quietly(self, name: str, keys: list[str], args: list[Any]) -> None:
        try:
            self._call(name, keys, args)
        except Exception:  # best effort while already failing
            pass

    def release(self, key: str, token: str) -> bool:
        return bool(self._call("release", [f"{self._base}L:{key}"], [token]))

    def extend(self, key: str, token: str, ttl: float) -> bool:
        args = [token, max(1, int(ttl * 1000))]
        return bool(self._call("extend", [f"{self._base}L:{key}"], args))

    def force_release(self, key: str, fence: int | None = None) -> bool:
        args: list[Any] = [""] if fence is None else ["", str(int(fence))]
        return bool(self._call("release", [f"{self._base}L:{key}"], args))

    def list_locks(self) -> list[LockInfo]:
        b = self._base
        rows = self._call("list", [f"{b}index"], [])
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

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        import redis

        try:
            redis_client.ping(self._client(), timeout)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            raise BackendUnavailable(
                f"Redis lock backend of app {self.app.name!r} is unreachable: {exc}"
            ) from exc

    def stop(self) -> None:
        client, self._client_obj = self._client_obj, None
        direct, self._direct = self._direct, None
        if direct is not None:
            direct.close()
        if client is not None and redis_client.owns_client(self.options):
            client.close()
