"""Redis backend extras: the subscriber connection's own reply reader and the
publisher's direct connection."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from mega_cluster.pubsub.backends import redis as redis_backend
from mega_cluster.testing import make_app
from tests.servers import redis_server

from .helpers import Recorder

pytestmark = pytest.mark.redis

PROTOCOLS = [pytest.param(2, id="resp2"), pytest.param(3, id="resp3")]


def _nodes(name, url, *ids, **extra):
    settings_ = {"PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": url, **extra}}}
    return [make_app(name, settings_, node_id=f"{name}-{i}") for i in ids]


def _url(protocol: int, base: str | None = None) -> str:
    return f"{base or settings.REDIS_URL}?protocol={protocol}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_messages_split_across_reads_and_packed_in_one_arrive_whole(
    protocol, unique_name
):
    """A message several times the read size, then a burst of small ones that
    arrive many per read, come out whole and in order, on RESP2 and RESP3."""
    a, b = _nodes(unique_name, _url(protocol), "a", "b")
    try:
        seen = Recorder()
        b.pubsub_manager.subscribe("news", seen)
        big = "é\r\n" * redis_backend.READ_SIZE  # about 6 reads
        a.pubsub_manager.publish("news", {"big": big})
        for i in range(500):
            a.pubsub_manager.publish("news", i)
        got = seen.wait(501, timeout=15)
        assert got[0] == {"big": big}
        assert got[1:] == list(range(500))
        assert b.pubsub_manager.backend.reconnects == 0
    finally:
        a.stop()
        b.stop()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_idle_pings_are_read_and_the_listener_stays_connected(protocol, unique_name):
    """The watchdog's PING replies (a push in RESP2, a simple string in RESP3) are
    read like any other reply: no reconnect, and messages still arrive."""
    a, b = _nodes(unique_name, _url(protocol), "a", "b", PING_INTERVAL=0.1)
    try:
        seen = Recorder()
        b.pubsub_manager.subscribe("news", seen)
        backend = b.pubsub_manager.backend
        pings = []
        ping = backend._pubsub.ping

        async def counted(*args):
            pings.append(1)
            return await ping(*args)

        backend._pubsub.ping = counted
        time.sleep(1.0)
        assert len(pings) >= 3
        a.pubsub_manager.publish("news", "after")
        assert seen.wait(1) == ["after"]
        assert backend.connected and backend.reconnects == 0
    finally:
        a.stop()
        b.stop()


def test_the_first_publish_after_a_restart_is_sent(unique_name):
    """The publisher's connection, closed by the restart while idle, is replaced
    before anything is sent on it: the first publish once Redis is back goes out
    (never re-sent, so never twice)."""
    with redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        a, b = _nodes(unique_name, url, "a", "b")
        try:
            seen, gaps = Recorder("seen"), Recorder("gaps")
            b.pubsub_manager.subscribe("news", seen, on_gap=lambda: gaps("gap"))
            a.pubsub_manager.publish("news", "before")
            assert seen.wait(1) == ["before"]
            server.restart()
            assert gaps.wait(1, timeout=15) == ["gap"]
            a.pubsub_manager.publish("news", "after")  # no BackendUnavailable
            assert seen.wait(2) == ["before", "after"]
        finally:
            a.stop()
            b.stop()
