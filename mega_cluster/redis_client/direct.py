"""Direct Redis connections for hot paths: one command is one send and one read.

redis-py's ``Redis.execute_command`` checks a connection out of its pool and back
in around every command, with locks, observability hooks and retry wrappers; on a
small machine that costs more CPU than the round trip itself (measured: about
120 µs of CPU per ``PING`` through the client, 50 µs on a held connection). The
lock backend and the pub/sub publisher send one short command per operation, so
they keep connections of their own here:

* connections are built from the client's pool settings (connection class, host,
  db, password, timeouts, TLS…), so ``OPTIONS["URL"]`` and ``OPTIONS["CACHE"]``
  mean what they mean for the client, and each is connected (``connect()``)
  before its first command: a Sentinel-managed connection asks the sentinels for
  the primary there (a command sent on an unconnected one would go to its
  default address, ``localhost:6379``);
* idle connections wait in a LIFO free list (``deque`` pop/append are atomic): a
  thread takes one, uses it alone, gives it back; there are as many as callers
  running at once;
* a connection that fails is closed and dropped. When it had been idle in the list
  (the server may have restarted or closed it since), the command is sent once more
  on a new connection, as redis-py's default retry does; a new connection that
  fails raises at once;
* with ``resend=False`` (the pub/sub publisher: a ``PUBLISH`` the server ran but
  whose reply was lost must not run twice) nothing is sent twice: an idle
  connection is checked before use instead (a closed one is replaced, as redis-py's
  pool does at checkout), and a failure after sending raises;
* after ``os.fork()`` the child starts with an empty list (the parent's sockets
  are never shared);
* ``timeout``: the socket timeouts of connections whose client has none (a
  ``CACHES`` entry's client without ``socket_timeout``), so no caller waits
  forever on a server that stopped answering.

A client without a single connection pool (``RedisCluster``, which routes each key
to its node) is used through its own ``execute_command``.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

# Bumped in a forked child (os.getpid() per command is a syscall: ~5 µs here).
_forks = 0


def _after_fork_in_child() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class DirectConnections:
    """Connections to the server of ``client``, used without its pool."""

    def __init__(
        self, client: Any, *, resend: bool = True, timeout: float | None = None
    ) -> None:
        self._free: deque[Any] = deque()
        self._forks = _forks
        self._resend = resend
        self._client = client  # a Sentinel pool's connections refer back to it
        pool = getattr(client, "connection_pool", None)
        if pool is None:
            self.execute = client.execute_command  # type: ignore[method-assign]
            return
        self._factory = pool.connection_class
        self._kwargs = dict(pool.connection_kwargs)
        if timeout is not None:
            # A client built elsewhere (a CACHES entry's) may have none: a server
            # that stops answering must not hang the caller.
            for key in ("socket_timeout", "socket_connect_timeout"):
                if self._kwargs.get(key) is None:
                    self._kwargs[key] = timeout

    def _new(self) -> Any:
        conn = self._factory(**self._kwargs)
        conn.connect()  # Sentinel: finds the current primary here
        return conn

    def _take(self) -> tuple[Any, bool]:
        if self._forks != _forks:  # forked: the parent's sockets are not ours
            self._free = deque()
            self._forks = _forks
        try:
            conn = self._free.pop()
        except IndexError:
            return self._new(), False
        if not self._resend:
            import redis

            try:
                # EOF (closed by the server) raises; unread data means a reply
                # nobody asked for: either way the connection cannot be trusted
                usable = not conn.can_read()
            except (redis.ConnectionError, OSError):
                usable = False
            if not usable:
                conn.disconnect()
                return self._new(), False
        return conn, True

    def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; raises redis-py's exceptions
        (``ConnectionError``, ``TimeoutError``, ``ResponseError``…)."""
        import redis

        conn, idle = self._take()
        while True:
            try:
                conn.send_command(*args)
                reply = conn.read_response()
            except redis.ResponseError:
                self._free.append(conn)  # an error reply: the connection is fine
                raise
            except (redis.ConnectionError, OSError):
                conn.disconnect()
                if not idle or not self._resend:
                    raise
                conn, idle = self._new(), False
                continue
            except BaseException:  # timeout, interrupt: the reply may still come
                conn.disconnect()
                raise
            self._free.append(conn)
            return reply

    def script(self, sha: str, text: str, keys: list[Any], args: list[Any]) -> Any:
        """``EVALSHA`` of ``text`` (whose SHA1 is ``sha``), loading it when the
        server does not know it (first use, restart, ``SCRIPT FLUSH``)."""
        import redis

        try:
            return self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            self.execute("SCRIPT", "LOAD", text)
            return self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def script_and_wait(
        self,
        sha: str,
        text: str,
        keys: list[Any],
        args: list[Any],
        replicas: int,
        timeout_ms: int,
    ) -> tuple[Any, int]:
        """:meth:`script`, then ``WAIT replicas timeout_ms`` on the same connection
        (sent together: one round trip plus the replicas' acknowledgement).
        Returns the script's reply and how many replicas acknowledged it."""
        import redis

        call = ("EVALSHA", sha, len(keys), *keys, *args)
        for _ in range(2):
            reply, acked = self._pair(call, ("WAIT", replicas, timeout_ms))
            if isinstance(reply, redis.exceptions.NoScriptError):
                self.execute("SCRIPT", "LOAD", text)
                continue
            if isinstance(reply, BaseException):
                raise reply
            if isinstance(acked, BaseException):
                raise acked
            return reply, int(acked)
        raise redis.exceptions.NoScriptError(f"script {sha} vanished twice")

    def _pair(self, first: tuple[Any, ...], second: tuple[Any, ...]) -> list[Any]:
        # both replies are read before the connection goes back (an error reply
        # comes back as its exception, in its place)
        import redis

        conn, idle = self._take()
        while True:
            try:
                conn.send_packed_command(conn.pack_commands([first, second]))
                replies = []
                for _ in range(2):
                    try:
                        replies.append(conn.read_response())
                    except redis.ResponseError as exc:
                        replies.append(exc)
            except (redis.ConnectionError, OSError):
                conn.disconnect()
                if not idle or not self._resend:
                    raise
                conn, idle = self._new(), False
                continue
            except BaseException:
                conn.disconnect()
                raise
            self._free.append(conn)
            return replies

    def close(self) -> None:
        """Close the idle connections (those in use close when they fail)."""
        free, self._free = self._free, deque()
        for conn in free:
            conn.disconnect()
