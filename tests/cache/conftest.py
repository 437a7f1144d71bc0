"""The cache contract runs once per store: locmem, Django's Redis backend, django-redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings

from mega_cluster.cache import Cache
from mega_cluster.registry import ClusterApp
from mega_cluster.testing import make_app

STORES = [
    pytest.param("default", id="locmem"),
    pytest.param("redis", id="django-redis-backend", marks=pytest.mark.redis),
    pytest.param("django_redis", id="django-redis", marks=pytest.mark.redis),
]


def app_settings(store: str, **cache: Any) -> dict[str, Any]:
    """One cluster app's settings: caches on ``store``, Redis locks and pub/sub."""
    return {
        "CACHE": {"DEFAULT_STORE": store, **cache},
        "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
        "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
    }


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return request.param


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
def redis_client() -> Iterator[Any]:
    """A raw client of the shared Redis, to look at what the stores hold."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()
