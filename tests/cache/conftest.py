"""The cache contract runs once per store: locmem, Django's Redis backend, django-redis,
and on the run's private topologies: django-redis's Sentinel client
(``redis-sentinel``) and mega_cluster's RedisClusterCache on the 3-primary Redis
Cluster (``redis-cluster``), each with the app's locks and pub/sub on the same
topology."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings

from mega_cluster.cache import Cache
from mega_cluster.registry import ClusterApp
from mega_cluster.testing import make_app

STORES = [
    pytest.param("default", id="locmem"),
    pytest.param("redis", id="django-redis-backend", marks=pytest.mark.redis),
    pytest.param("django_redis", id="django-redis", marks=pytest.mark.redis),
    pytest.param("redis-sentinel", id="redis-sentinel", marks=pytest.mark.redis),
    pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
]


def redis_options(store: str) -> dict[str, Any]:
    """The Redis OPTIONS of locks and pub/sub beside ``store``: the topology's."""
    if store == "redis-sentinel":
        return {"URL": settings.MC_SENTINEL_URL}
    if store == "redis-cluster":
        return {"URL": settings.MC_CLUSTER_URL, "CLUSTER": True}
    return {"URL": settings.REDIS_URL}


def app_settings(store: str, **cache: Any) -> dict[str, Any]:
    """One cluster app's settings: caches on ``store``, Redis locks and pub/sub."""
    options = redis_options(store)
    return {
        "CACHE": {"DEFAULT_STORE": store, **cache},
        "LOCKS": {"BACKEND": "redis", "OPTIONS": options},
        "PUBSUB": {"BACKEND": "redis", "OPTIONS": options},
    }


def topology_caches(store: str, topology: Any) -> dict[str, Any]:
    """CACHES with an alias ``store`` on ``topology`` (Sentinel or Cluster)."""
    if store == "redis-sentinel":
        entry = {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://{topology.service}/0",
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.SentinelClient",
                "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                "SENTINELS": topology.addresses,
            },
        }
    else:
        entry = {
            "BACKEND": "mega_cluster.cache.redis_cluster.RedisClusterCache",
            "LOCATION": topology.url,
        }
    return {**settings.CACHES, store: {**entry, "KEY_PREFIX": settings.KEY_PREFIX}}


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "redis-sentinel":
        topology = request.getfixturevalue("sentinel_topology")
        with override_settings(
            CACHES=topology_caches(request.param, topology),
            MC_SENTINEL_URL=topology.url,
        ):
            yield request.param
    elif request.param == "redis-cluster":
        topology = request.getfixturevalue("cluster_topology")
        with override_settings(
            CACHES=topology_caches(request.param, topology),
            MC_CLUSTER_URL=topology.url,
        ):
            yield request.param
    else:
        yield request.param


@pytest.fixture
def make_cluster_app(
    store: str, unique_name: str
) -> Iterator[Callable[..., ClusterApp]]:
    """Build cluster apps on ``store``; the same name means the same namespace."""
    apps: list[ClusterApp] = []

    def build(name: str | None = None, **cache: Any) -> ClusterApp:
        app = make_app(name or unique_name, app_settings(store, **cache))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.stop()


@pytest.fixture
def make_cache(make_cluster_app: Callable[..., ClusterApp]) -> Callable[..., Cache]:
    """``make_cache(name="c", *, app=None, **create_cache_kwargs)``."""

    def build(
        name: str = "c", *, app: ClusterApp | None = None, **kwargs: Any
    ) -> Cache:
        app = app or make_cluster_app()
        return app.cache_manager.create_cache(name, **kwargs)

    return build


@pytest.fixture
def cache(make_cache: Callable[..., Cache]) -> Cache:
    return make_cache()


@pytest.fixture
def redis_client(store: str) -> Iterator[Any]:
    """A raw client of the Redis under ``store`` (the shared one, the Sentinel
    primary or the Cluster), to look at what the stores hold."""
    from mega_cluster import redis_client as clients

    client = clients.sync_client(redis_options(store))
    yield client
    client.close()
