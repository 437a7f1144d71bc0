"""redis_client: one settings shape (URL, sentinel:// URL, SENTINELS, CACHE) for
every Redis part, and direct connections that follow the Sentinel primary."""

from __future__ import annotations

import pytest

from mega_cluster import redis_client
from mega_cluster.redis_client import DirectConnections, parse_sentinel_url

pytestmark = pytest.mark.redis

redis = pytest.importorskip("redis")


def test_a_sentinel_url_names_sentinels_service_db_and_both_passwords():
    spec = parse_sentinel_url(
        "sentinel://app:s%40cret@h1:26379,h2:26380/mymaster/3?sentinel_password=sp"
    )
    assert spec.sentinels == [("h1", 26379), ("h2", 26380)]
    assert (spec.service, spec.db) == ("mymaster", 3)
    assert (spec.username, spec.password) == ("app", "s@cret")
    assert spec.sentinel_password == "sp"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs OPTIONS['URL']"),
        ({"URL": "http://x"}, "must start with redis://"),
        ({"URL": "sentinel://h1:26379"}, "/SERVICE_NAME"),
        ({"URL": "sentinel://h1/s"}, "is not host:port"),
        ({"URL": "sentinel://h1:1/s/x"}, "is not a number"),
        ({"URL": "sentinel://h1:1/s?password=x"}, "unknown parameter"),
        ({"SENTINELS": ["h:1"]}, "needs SERVICE_NAME"),
        ({"SENTINELS": "h:1", "SERVICE_NAME": "s"}, "must be a list"),
        ({"URL": "redis://x", "CACHE": "redis"}, "set only one"),
        ({"URL": "redis://x", "CLUSTER": "yes"}, "True or False"),
        ({"CACHE": "redis", "CLUSTER": True}, "CLUSTER'] = True needs"),
        ({"URL": "redis://h1:7000,h2:7000/0"}, "names several servers"),
        ({"URL": "redis://h1:7000,h2/0", "CLUSTER": True}, "is not host:port"),
    ],
)
def test_bad_redis_settings_are_named(options, message):
    problems = redis_client.check_options(options, "Owner")
    assert problems and message in problems[0], problems


def test_good_redis_settings_pass():
    for options in (
        {"URL": "redis://127.0.0.1:6379/0"},
        {"URL": "sentinel://h1:26379,h2:26379/svc"},
        {"SENTINELS": [("h1", 26379), "h2:26379"], "SERVICE_NAME": "svc", "DB": 2},
        {"CACHE": "redis"},
        {"URL": "redis://h:7000", "CLUSTER": True},
        {"URL": "redis://:pw@h1:7000,h2:7001/0", "CLUSTER": True},
    ):
        assert redis_client.check_options(options, "Owner") == [], options


def test_direct_connections_of_a_sentinel_client_reach_its_primary(
    sentinel_topology,
):
    client = redis_client.sync_client({"URL": sentinel_topology.url})
    direct = DirectConnections(client)
    try:
        info = direct.execute("INFO", "server").decode()
        assert f"tcp_port:{sentinel_topology.master_port()}" in info
        assert direct.execute("ROLE")[0] == b"master"
    finally:
        direct.close()
        client.close()


def test_without_a_primary_direct_connections_fail_instead_of_going_elsewhere(
    sentinel_topology,
):
    """The reported bug: a ``Sentinel.master_for()`` client whose service has no
    primary raised ``MasterNotFoundError`` on its own ``ping()`` while our direct
    connection got ``PONG`` from ``localhost:6379``, another server."""
    from redis.sentinel import MasterNotFoundError, Sentinel

    sentinel = Sentinel(sentinel_topology.addresses, socket_timeout=2)
    client = sentinel.master_for("no-such-service", socket_timeout=2)
    direct = DirectConnections(client)
    with pytest.raises(MasterNotFoundError):
        client.ping()
    with pytest.raises(MasterNotFoundError):
        direct.execute("PING")
    direct.close()


def test_the_spelled_out_sentinel_settings_reach_the_same_primary(sentinel_topology):
    options = {
        "SENTINELS": [f"{h}:{p}" for h, p in sentinel_topology.addresses],
        "SERVICE_NAME": sentinel_topology.service,
    }
    client = redis_client.sync_client(options)
    try:
        info = client.info("server")
        assert info["tcp_port"] == sentinel_topology.master_port()
    finally:
        client.close()


@pytest.mark.parametrize("alias", ["redis", "django_redis"])
def test_the_async_client_of_a_cache_alias_reaches_the_cache_server(alias):
    """Pub/sub accepts OPTIONS['CACHE'] too: its asyncio client connects where
    the cache's (sync) client does."""
    import asyncio

    from django.conf import settings

    async def port() -> int:
        client = redis_client.async_client({"CACHE": alias})
        try:
            return (await client.info("server"))["tcp_port"]
        finally:
            await client.aclose()

    assert asyncio.run(port()) == settings.REDIS_PORT


def _sentinel_caches(topology) -> dict:
    from django.conf import settings

    return {
        **settings.CACHES,
        "sentinel": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{topology.service}/0",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": topology.addresses,
            },
        },
    }


def test_a_django_redis_sentinel_cache_alias_reaches_the_primary_sync_and_async(
    sentinel_topology,
):
    """OPTIONS['CACHE'] naming django-redis' Sentinel client: our direct
    connections and the asyncio twin (pub/sub) both go to the current primary."""
    import asyncio

    from django.core.cache import caches
    from django.test import override_settings

    primary = sentinel_topology.master_port()
    with override_settings(CACHES=_sentinel_caches(sentinel_topology)):
        try:
            client = redis_client.sync_client({"CACHE": "sentinel"})
            direct = DirectConnections(client)
            try:
                info = direct.execute("INFO", "server").decode()
                assert f"tcp_port:{primary}" in info
            finally:
                direct.close()

            async def port() -> int:
                aclient = redis_client.async_client({"CACHE": "sentinel"})
                try:
                    return (await aclient.info("server"))["tcp_port"]
                finally:
                    await aclient.aclose()

            assert asyncio.run(port()) == primary
        finally:
            caches["sentinel"].close()


def test_a_cluster_url_names_its_first_node_and_the_others():
    first, others = redis_client.cluster_nodes("redis://u:p@h1:7000,h2:7001,h3:7002/0")
    assert first == "redis://u:p@h1:7000/0"
    assert others == [("h2", 7001), ("h3", 7002)]
