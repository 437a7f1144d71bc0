"""A ``CACHES`` backend for a Redis Cluster: Django's ``RedisCache`` on a
redis-py ``RedisCluster`` client.

Django's ``RedisCache`` and django-redis talk to one server: on a cluster node
their commands on keys of other nodes fail (``MOVED``), their ``MGET``/``MSET``
across slots fail (``CROSSSLOT``). This backend keeps Django's ``RedisCache``
(its serializer, timeouts and key functions) and swaps the client::

    CACHES = {
        "default": {
            "BACKEND": "mega_cluster.cache.redis_cluster.RedisClusterCache",
            "LOCATION": "redis://10.0.0.1:7000/0",  # any node (or several, ",")
        },
    }

Multi-key calls (``get_many``, ``set_many``, ``delete_many``) are split by slot
(not atomic across slots, as on any cluster); a cache of mega_cluster keeps each
namespace in one slot (a hash tag), so its generation and values are still read
in one ``MGET``. ``OPTIONS`` are passed to ``RedisCluster`` (``password``,
``socket_timeout``…); ``clear()`` flushes every primary.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient

__all__ = ["RedisClusterCache", "RedisClusterCacheClient"]


class RedisClusterCacheClient(RedisCacheClient):
    """Django's Redis cache client with one ``RedisCluster`` for every call."""

    # set by RedisCacheClient.__init__ (not in django-stubs)
    _servers: list[str]
    _pool_options: dict[str, Any]
    _serializer: Any

    def __init__(self, servers: list[str], **options: Any) -> None:
        options.pop("pool_class", None)  # a cluster keeps a pool per node itself
        super().__init__(servers, **options)
        self._cluster: Any = None
        self._cluster_lock = threading.Lock()

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        cluster = self._cluster
        if cluster is None:
            from redis.cluster import ClusterNode, RedisCluster

            with self._cluster_lock:
                if self._cluster is None:
                    options = dict(self._pool_options)
                    options.pop("parser_class", None)
                    first, *others = self._servers
                    nodes = [_node(ClusterNode, url) for url in others]
                    self._cluster = RedisCluster.from_url(
                        first, startup_nodes=nodes or None, **options
                    )
                cluster = self._cluster
        return cluster

    def get_many(self, keys: Any) -> dict[Any, Any]:
        keys = list(keys)
        if not keys:
            return {}
        values = self.get_client(None).mget_nonatomic(keys)
        loads = self._serializer.loads
        return {k: loads(v) for k, v in zip(keys, values, strict=True) if v is not None}

    def set_many(self, data: Mapping[Any, Any], timeout: Any) -> None:
        if timeout == 0:  # Django's "expire now"
            self.delete_many(list(data))
            return
        pipeline = self.get_client(None, write=True).pipeline(transaction=False)
        dumps = self._serializer.dumps
        for key, value in data.items():
            pipeline.set(key, dumps(value), ex=timeout)
        pipeline.execute()

    def clear(self) -> bool:
        from redis.cluster import RedisCluster

        client = self.get_client(None, write=True)
        return bool(client.flushdb(target_nodes=RedisCluster.PRIMARIES))

    def close(self) -> None:
        with self._cluster_lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()


def _node(node_class: Any, url: str) -> Any:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return node_class(parts.hostname or "127.0.0.1", parts.port or 6379)


class RedisClusterCache(RedisCache):
    """Django's ``RedisCache`` on a Redis Cluster (see the module)."""

    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = RedisClusterCacheClient
