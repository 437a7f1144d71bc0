"""CacheManager: creating caches, defaults from settings, plugins' caches, check W004."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from mega_cluster import CacheNameTaken, InvalidName, Plugin
from mega_cluster.cache import Cache
from mega_cluster.cache.checks import check_shared_caches
from mega_cluster.checks import check_settings
from mega_cluster.conf import parse_app
from mega_cluster.registry import ClusterApp
from mega_cluster.testing import make_app

from .conftest import app_settings


@pytest.fixture
def app(unique_name: str) -> Iterator[ClusterApp]:
    app = make_app(unique_name, app_settings("default"))
    yield app
    app.stop()


def test_a_duplicate_name_raises_cache_name_taken(app: ClusterApp):
    """Two caches of one name in one app: CacheNameTaken, a ValueError."""
    first = app.cache_manager.create_cache("users")
    with pytest.raises(CacheNameTaken, match="users"):
        app.cache_manager.create_cache("users", prefix="other")
    assert issubclass(CacheNameTaken, ValueError)
    assert app.cache_manager.get_cache("users") is first
    with pytest.raises(KeyError, match="nope"):
        app.cache_manager.get_cache("nope")


def test_an_unknown_store_is_a_configuration_error(app: ClusterApp):
    """store= must be a CACHES alias; the message lists the configured ones."""
    with pytest.raises(ImproperlyConfigured, match=r"'nowhere'.*default, redis"):
        app.cache_manager.create_cache("c", store="nowhere")
    assert "c" not in app.cache_manager


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"name": "has space"}, InvalidName),
        ({"name": ""}, InvalidName),
        ({"name": "ok", "prefix": "bad/prefix"}, InvalidName),
        ({"name": "ok", "ttl": 0}, ValueError),
        ({"name": "ok", "ttl": "60"}, TypeError),
        ({"name": "ok", "store": 3}, TypeError),
        ({"name": "ok", "near_ttl": -1}, ValueError),
        ({"name": "ok", "near_max_entries": 0}, ValueError),
    ],
)
def test_bad_create_cache_arguments_raise(
    app: ClusterApp, kwargs: dict[str, Any], error: type[Exception]
):
    """Each bad argument is rejected at the call, and no cache is registered."""
    with pytest.raises(error):
        app.cache_manager.create_cache(**kwargs)
    assert app.cache_manager.names() == []


def test_defaults_come_from_the_cache_settings(unique_name: str):
    """store, ttl and the wrap timeout default to MEGA_CLUSTER CACHE; the prefix to
    the name; explicit arguments win."""
    app = make_app(unique_name, app_settings("redis", TTL=42, WRAP_TIMEOUT=3))
    try:
        cache = app.cache_manager.create_cache("c")
        assert (cache.store.alias, cache.default_ttl, cache.prefix) == (
            "redis",
            42,
            "c",
        )
        assert cache.wrap_timeout == 3
        other = app.cache_manager.create_cache(
            "d", store="default", ttl=5, prefix="p:q"
        )
        assert (other.store.alias, other.default_ttl, other.prefix) == (
            "default",
            5,
            "p:q",
        )
        assert not other.store.shared and cache.store.shared
    finally:
        app.stop()


def test_app_cache_is_the_default_cache(app: ClusterApp):
    """app.cache is one cache named "default" on the default store."""
    assert app.cache is app.cache
    assert isinstance(app.cache, Cache) and app.cache.name == "default"
    app.cache.set("k", 1)
    assert app.cache_manager.get_cache("default").get("k") == 1


class ReportsPlugin(Plugin):
    name = "reports"
    caches = {"reports": {"ttl": 12}, "rows": {"ttl": 34, "shared": True}}


def test_plugin_caches_are_namespaced_and_use_declared_options(app: ClusterApp):
    """self.cache is "plugin:<name>"; create_cache(sub) is "plugin:<name>:<sub>";
    options declared in Plugin.caches apply, call arguments override them."""
    plugin = ReportsPlugin(app)
    assert plugin.cache is plugin.cache
    assert (plugin.cache.name, plugin.cache.prefix) == ("plugin:reports",) * 2
    assert plugin.cache.default_ttl == 12
    rows = plugin.create_cache("rows")
    assert rows.name == "plugin:reports:rows" and rows.default_ttl == 34
    assert rows.shared
    other = plugin.create_cache("other", ttl=7)
    assert other.default_ttl == 7
    plugin.cache.set("k", "v")
    assert rows.get("k") is None


def test_w004_warns_for_a_shared_plugin_cache_on_a_local_store():
    """Under DEBUG=False a cache declared shared on locmem is W004; on Redis, or
    not shared, or under DEBUG=True, it is not."""
    local = parse_app("main", {"CACHE": {"DEFAULT_STORE": "default"}})
    shared = parse_app("main", {"CACHE": {"DEFAULT_STORE": "redis"}})
    plugins = [("reports", ReportsPlugin)]
    messages = check_shared_caches(local, False, plugins)
    assert [m.id for m in messages] == ["mega_cluster.W004"]
    assert "'rows'" in messages[0].msg and messages[0].hint
    assert check_shared_caches(shared, False, plugins) == []
    assert check_shared_caches(local, True, plugins) == []

    class OwnStore(Plugin):
        name = "own"
        caches = {"x": {"shared": True, "store": "redis"}}

    assert check_shared_caches(local, False, [("own", OwnStore)]) == []
    restricted = parse_app("main", {"PLUGINS": ["other"]})
    assert check_shared_caches(restricted, False, plugins) == []


def test_w004_is_reported_by_manage_py_check(monkeypatch: pytest.MonkeyPatch):
    """The check runs with the others for the installed plugins."""
    from plugins.site_notice.plugin import SiteNoticePlugin

    monkeypatch.setattr(SiteNoticePlugin, "caches", {"site_notice": {"shared": True}})
    with override_settings(
        DEBUG=False, MEGA_CLUSTER={"CACHE": {"DEFAULT_STORE": "default"}}
    ):
        ids = [m.id for m in check_settings()]
    assert "mega_cluster.W004" in ids
    with override_settings(
        DEBUG=False, MEGA_CLUSTER={"CACHE": {"DEFAULT_STORE": "redis"}}
    ):
        ids = [m.id for m in check_settings()]
    assert "mega_cluster.W004" not in ids


@pytest.mark.parametrize(
    "backend",
    ["django_redis.cache.RedisCache", "django.core.cache.backends.redis.RedisCache"],
)
def test_an_unreachable_redis_raises_backend_unavailable(
    unique_name: str, backend: str
):
    """Reads and writes on a store whose server is down raise BackendUnavailable
    (a ConnectionError) with the driver's error as __cause__."""
    from django.conf import settings

    from mega_cluster import BackendUnavailable

    from ..servers import free_port

    down = {"BACKEND": backend, "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    with override_settings(CACHES={**settings.CACHES, "down": down}):
        app = make_app(unique_name, app_settings("down"))
        try:
            cache = app.cache_manager.create_cache("c")
            for call in (lambda: cache.get("k"), lambda: cache.set("k", 1)):
                with pytest.raises(BackendUnavailable, match="'down'") as info:
                    call()
                assert isinstance(info.value, ConnectionError)
                assert info.value.__cause__ is not None
        finally:
            app.stop()
