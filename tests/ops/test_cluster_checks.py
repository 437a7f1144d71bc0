"""E015: a one-server Redis client pointed at a Redis Cluster node is a check error
naming the setting to change (CACHES entries, Redis LOCKS and PUBSUB sections)."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.test import override_settings

from mega_cluster.checks import check_redis_clusters
from tests.servers import free_port

pytestmark = pytest.mark.redis

CLUSTER_CACHE = "mega_cluster.cache.redis_cluster.RedisClusterCache"


def _errors(caches=None, mega=None):
    overrides = {"CACHES": caches or {"default": settings.CACHES["default"]}}
    if mega is not None:
        overrides["MEGA_CLUSTER"] = mega
    with override_settings(**overrides):
        return [m for m in check_redis_clusters() if m.id == "mega_cluster.E015"]


@pytest.mark.parametrize(
    "backend",
    ["django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache"],
)
def test_a_one_server_cache_on_a_cluster_node_names_its_caches_entry(
    cluster_topology, backend
):
    caches = {"default": {"BACKEND": backend, "LOCATION": cluster_topology.url}}
    (error,) = _errors(caches)
    assert "CACHES['default']" in error.msg and backend in error.msg
    assert CLUSTER_CACHE in error.hint


def test_the_cluster_cache_and_a_plain_redis_pass(cluster_topology):
    caches = {
        "default": {"BACKEND": CLUSTER_CACHE, "LOCATION": cluster_topology.url},
        "plain": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": settings.REDIS_URL,
        },
        # nobody answers there: said nothing about (start-up reports it)
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        },
    }
    assert _errors(caches) == []


@pytest.mark.parametrize("section", ["LOCKS", "PUBSUB"])
def test_a_redis_section_on_a_cluster_node_without_cluster_names_the_option(
    cluster_topology, unique_name, section
):
    options = {"URL": cluster_topology.url}
    mega = {"APP_NAME": unique_name, section: {"BACKEND": "redis", "OPTIONS": options}}
    (error,) = _errors(mega=mega)
    assert f"{section}: OPTIONS['URL']" in error.msg
    assert f'MEGA_CLUSTER["{section}"]["OPTIONS"]["CLUSTER"] = True' in error.hint
    options["CLUSTER"] = True
    assert _errors(mega=mega) == []


def test_e015_is_a_deployment_check():
    """E015 connects, so it runs with ``check --deploy`` only: a plain ``check`` (and
    the checks of ``migrate`` and ``runserver``) opens no connection."""
    from django.core.checks.registry import registry

    assert check_redis_clusters not in registry.get_checks()
    assert check_redis_clusters in registry.get_checks(include_deployment_checks=True)
