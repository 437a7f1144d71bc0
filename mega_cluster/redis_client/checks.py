"""System check E015: a one-server Redis client pointed at a Redis Cluster node.

Django's ``RedisCache``, django-redis's default client and mega_cluster's Redis
backends without ``OPTIONS["CLUSTER"]`` send every command to the one server they
are given: on a cluster node, commands on keys of other nodes fail (``MOVED``)
and multi-key ones across slots fail (``CROSSSLOT``) — some calls work, others
fail at random. Whether a server is a cluster node is only known by asking it, so
this check sends one ``INFO cluster`` per distinct server (connect and read
timeout :data:`TIMEOUT`) and says nothing about a server that does not answer.
"""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.utils.module_loading import import_string

from .. import conf

#: Connect and read timeout of the check's ``INFO cluster`` (seconds).
TIMEOUT = 1.0
#: URL schemes of one Redis server.
SCHEMES = ("redis://", "rediss://", "unix://")
#: django-redis client classes that talk to one server per call.
ONE_SERVER_CLIENTS = (
    "django_redis.client.DefaultClient",
    "django_redis.client.default.DefaultClient",
    "django_redis.client.HerdClient",
    "django_redis.client.herd.HerdClient",
)
#: The cluster-aware CACHES backend mega_cluster ships.
CLUSTER_CACHE = "mega_cluster.cache.redis_cluster.RedisClusterCache"


def cluster_node(url: str, answers: dict[str, bool | None]) -> bool | None:
    """Whether the server at ``url`` is a Redis Cluster node (None: no answer);
    ``answers`` remembers servers already asked during one check run."""
    if url in answers:
        return answers[url]
    answer: bool | None = None
    try:
        import redis

        client = redis.Redis.from_url(
            url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
        )
        try:
            answer = str(client.info("cluster").get("cluster_enabled", 0)) == "1"
        finally:
            client.close()
    except Exception:  # down, unknown host, auth: other checks and start-up say so
        answer = None
    answers[url] = answer
    return answer


def _one_server_cache(config: dict[str, Any]) -> bool:
    """Whether a ``CACHES`` entry is a Redis backend that talks to one server."""
    try:
        cls = import_string(str(config.get("BACKEND", "")))
    except ImportError:
        return False
    names = {f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__}
    if CLUSTER_CACHE in names:
        return False
    if "django.core.cache.backends.redis.RedisCache" in names:
        return True
    if "django_redis.cache.RedisCache" in names:
        client = (config.get("OPTIONS") or {}).get("CLIENT_CLASS")
        return client is None or client in ONE_SERVER_CLIENTS
    return False


def _locations(config: dict[str, Any]) -> list[str]:
    location = config.get("LOCATION") or []
    if isinstance(location, str):
        location = re.split("[;,]", location)
    return [u.strip() for u in location if isinstance(u, str) and u.strip()]


def check_cluster_clients(apps: list[conf.AppSettings]) -> list[CheckMessage]:
    """E015 for each ``CACHES`` entry and each Redis LOCKS/PUBSUB section of
    ``apps`` whose one-server client points at a Redis Cluster node."""
    answers: dict[str, bool | None] = {}
    messages: list[CheckMessage] = []
    caches: dict[str, Any] = getattr(settings, "CACHES", {}) or {}
    for alias, config in caches.items():
        if not isinstance(config, dict) or not _one_server_cache(config):
            continue
        for url in _locations(config):
            if url.startswith(SCHEMES) and cluster_node(url, answers):
                messages.append(
                    Error(
                        f"CACHES[{alias!r}] ({config.get('BACKEND')}) points at a "
                        f"Redis Cluster node ({url}) with a one-server client: "
                        "calls on keys of other nodes fail with MOVED or CROSSSLOT.",
                        hint=f'Set CACHES["{alias}"]["BACKEND"] to "{CLUSTER_CACHE}"'
                        " (LOCATION: the URL of any node), or point it at a Redis "
                        "that is not in a cluster.",
                        id="mega_cluster.E015",
                    )
                )
                break
    for app in apps:
        for name in ("LOCKS", "PUBSUB"):
            section = app.sections.get(name)
            backend = section.backend if section is not None else None
            if backend is None or backend.alias != "redis":
                continue
            options = backend.options
            where = options.get("URL")
            if options.get("CLUSTER") or not isinstance(where, str):
                continue
            if where.startswith(SCHEMES) and cluster_node(where, answers):
                messages.append(
                    Error(
                        f"MEGA_CLUSTER app {app.name!r} {name}: OPTIONS['URL'] "
                        f"{where!r} is a Redis Cluster node, but OPTIONS['CLUSTER'] is "
                        "not True: the one-server client would fail with MOVED or "
                        "CROSSSLOT.",
                        hint=f'Set MEGA_CLUSTER["{name}"]["OPTIONS"]["CLUSTER"] = True.',
                        id="mega_cluster.E015",
                    )
                )
    return messages
