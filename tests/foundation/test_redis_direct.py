"""DirectConnections: the lean Redis path of the lock backend and pub/sub publisher."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from mega_cluster.redis_client import DirectConnections
from mega_cluster.testing import wait_until
from tests.servers import redis_server

pytestmark = pytest.mark.redis

redis = pytest.importorskip("redis")


def _client_id(direct: DirectConnections) -> int:
    return int(direct.execute("CLIENT", "ID"))


def test_commands_reuse_one_idle_connection(redis_url, unique_name):
    client = redis.Redis.from_url(redis_url)
    direct = DirectConnections(client)
    try:
        first = _client_id(direct)
        assert direct.execute("SET", f"{unique_name}:k", "v") in (b"OK", "OK", True)
        assert direct.execute("GET", f"{unique_name}:k") == b"v"
        assert _client_id(direct) == first  # same socket, no pool round trip
    finally:
        direct.execute("DEL", f"{unique_name}:k")
        direct.close()
        client.close()


def test_an_error_reply_raises_and_keeps_the_connection(redis_url, unique_name):
    client = redis.Redis.from_url(redis_url)
    direct = DirectConnections(client)
    try:
        first = _client_id(direct)
        direct.execute("SET", f"{unique_name}:s", "text")
        with pytest.raises(redis.ResponseError, match="not an integer"):
            direct.execute("INCR", f"{unique_name}:s")
        assert _client_id(direct) == first
    finally:
        direct.execute("DEL", f"{unique_name}:s")
        direct.close()
        client.close()


def test_script_is_loaded_when_the_server_does_not_know_it(redis_url, unique_name):
    """First use and after SCRIPT FLUSH (or a restart): EVALSHA fails with NOSCRIPT,
    the script is loaded and the call answered."""
    text = f"return '{unique_name}' .. ARGV[1]"
    sha = hashlib.sha1(text.encode()).hexdigest()
    client = redis.Redis.from_url(redis_url)
    direct = DirectConnections(client)
    try:
        assert direct.script(sha, text, [], ["x"]) == f"{unique_name}x".encode()
        assert client.script_exists(sha) == [True]
    finally:
        direct.close()
        client.close()


def test_a_dropped_idle_connection_is_replaced_once(redis_url):
    """An idle connection the server closed (restart, timeout, CLIENT KILL) costs
    nothing: the command is sent again on a new connection."""
    client = redis.Redis.from_url(redis_url)
    direct = DirectConnections(client)
    try:
        first = _client_id(direct)
        client.client_kill_filter(_id=first)
        assert direct.execute("PING") in (b"PONG", True)
        assert _client_id(direct) != first
    finally:
        direct.close()
        client.close()


def test_a_new_connection_that_fails_raises_connection_error():
    with redis_server() as server:
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)
        direct = DirectConnections(client)
        assert direct.execute("PING") in (b"PONG", True)
        server.stop()
        # The idle connection is dead and so is every new one: one retry, then raise.
        with pytest.raises(redis.ConnectionError):
            direct.execute("PING")
        with pytest.raises(redis.ConnectionError):
            direct.execute("PING")
        server.start()
        assert direct.execute("PING") in (b"PONG", True)
        direct.close()
        client.close()


def test_a_timeout_closes_the_connection_and_is_not_retried():
    """A reply that does not come in time may still come: that socket is closed (a
    late reply must not answer the next command) and the command not re-sent."""
    with redis_server() as server:
        client = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=0.5)
        direct = DirectConnections(client)
        first = _client_id(direct)
        # A blocking command that outlives the socket timeout.
        with pytest.raises(redis.TimeoutError):
            direct.execute("BLPOP", "mc-direct-never", 2)
        assert len(direct._free) == 0
        assert _client_id(direct) != first
        direct.close()
        client.close()


def test_a_forked_child_opens_its_own_connections(redis_url):
    client = redis.Redis.from_url(redis_url)
    direct = DirectConnections(client)
    parent_id = _client_id(direct)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            child_id = _client_id(direct)
            os.write(write, str(child_id).encode())
        finally:
            os._exit(0)
    os.close(write)
    child_id = int(os.read(read, 64) or b"0")
    os.close(read)
    os.waitpid(pid, 0)
    assert child_id and child_id != parent_id
    # The parent's connection was left alone by the child.
    assert _client_id(direct) == parent_id
    direct.close()
    client.close()


def test_a_client_without_one_pool_is_used_through_execute_command(
    redis_url, unique_name
):
    """RedisCluster routes each key to a node and has no single pool: its own
    execute_command serves the calls (here a stand-in exposing only that)."""
    client = redis.Redis.from_url(redis_url)

    class Routed:
        def __init__(self) -> None:
            self.calls: list[tuple] = []

        def execute_command(self, *args):
            self.calls.append(args)
            return client.execute_command(*args)

    routed = Routed()
    direct = DirectConnections(routed)
    try:
        direct.execute("SET", f"{unique_name}:r", "1")
        text = f"return redis.call('GET', KEYS[1]) -- {unique_name}"  # not loaded yet
        sha = hashlib.sha1(text.encode()).hexdigest()
        assert direct.script(sha, text, [f"{unique_name}:r"], []) == b"1"
        assert [c[0] for c in routed.calls] == ["SET", "EVALSHA", "SCRIPT", "EVALSHA"]
    finally:
        client.delete(f"{unique_name}:r")
        client.close()


# resend=False: the pub/sub publisher, where a PUBLISH must never run twice ----------

_BUSY_INCR = """
redis.call('INCR', KEYS[1])
local t = redis.call('TIME')
local start = t[1] * 1000000 + t[2]
repeat
  t = redis.call('TIME')
until t[1] * 1000000 + t[2] - start > 400000
return 1
"""


@pytest.mark.parametrize("resend", [True, False])
def test_a_command_that_failed_after_sending_is_resent_only_with_resend(resend):
    """The connection drops while the server runs the command (a script that
    increments, then stays busy): with resend (locks) it is sent again on a new
    connection and runs twice; with resend=False it raises and ran once."""
    import threading

    from tests.servers import TcpProxy

    with redis_server() as server:
        proxy = TcpProxy(server.port)
        client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=5)
        direct = DirectConnections(client, resend=resend)
        check = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5)
        try:
            direct.execute("PING")  # an idle connection in the free list

            def cut() -> None:
                time.sleep(0.15)  # the script is running
                proxy.cut()
                proxy.restore()

            cutter = threading.Thread(target=cut)
            cutter.start()
            if resend:
                assert direct.execute("EVAL", _BUSY_INCR, 1, "mc-direct-n") == 1
            else:
                with pytest.raises(redis.ConnectionError):
                    direct.execute("EVAL", _BUSY_INCR, 1, "mc-direct-n")
            cutter.join()
            assert wait_until(lambda: check.get("mc-direct-n") is not None, 5)
            time.sleep(0.5)  # a resent script would have run by now
            assert int(check.get("mc-direct-n")) == (2 if resend else 1)
        finally:
            direct.close()
            client.close()
            check.close()
            proxy.close()


def test_without_resend_a_closed_idle_connection_is_replaced_before_sending(
    redis_url, unique_name
):
    """A connection the server closed while it was idle (restart, timeout, CLIENT
    KILL) is found before anything is sent on it: the command runs once, on a new
    connection, and does not raise."""
    client = redis.Redis.from_url(redis_url)
    direct = DirectConnections(client, resend=False)
    key = f"{unique_name}:once"
    try:
        first = _client_id(direct)
        client.client_kill_filter(_id=first)
        assert direct.execute("INCR", key) == 1
        assert _client_id(direct) != first
        assert int(client.get(key)) == 1
    finally:
        client.delete(key)
        direct.close()
        client.close()
