"""Redis clients for every part of mega_cluster that talks to Redis, from one
settings shape, and the direct connections of the hot paths.

Settings (the ``OPTIONS`` of a Redis lock or pub/sub backend; docs/deployment.md):

* ``URL``: ``redis://``, ``rediss://`` or ``unix://`` (one server), or
  ``sentinel://[[user]:password@]host:port[,host:port…]/SERVICE[/DB]`` (Sentinel:
  the password is the data servers'; ``?sentinel_password=…`` the sentinels');
* or ``SENTINELS`` (``["host:port", …]`` or ``[(host, port), …]``) with
  ``SERVICE_NAME`` and optionally ``PASSWORD``, ``USERNAME``, ``DB``,
  ``SENTINEL_PASSWORD``, ``SENTINEL_USERNAME``: the same, spelled out;
* or ``CACHE``: the alias of a Redis entry of ``CACHES`` (django-redis, including
  its Sentinel client, or Django's ``RedisCache``), whose client is reused;
* ``CLUSTER = True`` with a ``redis://`` URL of any node: a Redis Cluster client;
  the URL may name several nodes, ``redis://[auth@]host:port,host:port/0``, asked
  in turn when the client (re)learns the cluster's layout.

A Sentinel client connects each new connection to the primary that the sentinels
name at that moment: after a failover, connections to the old primary fail (the
sentinels close them, or it answers ``READONLY``) and the next one goes to the new
primary. Callers treat that as any lost connection (pub/sub reconnects and reports
the gap), never as a silent switch.

The lock backend and the pub/sub publisher send their commands on
:class:`DirectConnections` (:mod:`.direct`) built from these clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .direct import DirectConnections

__all__ = [
    "DirectConnections",
    "async_client",
    "check_options",
    "is_cluster",
    "owns_client",
    "sync_client",
]

# building clients --------------------------------------------------------------------

_SCHEMES = ("redis", "rediss", "unix")


class SentinelSpec:
    """Where the sentinels are and what they watch (from a URL or spelled out)."""

    def __init__(
        self,
        sentinels: list[tuple[str, int]],
        service: str,
        *,
        db: int = 0,
        password: str | None = None,
        username: str | None = None,
        sentinel_password: str | None = None,
        sentinel_username: str | None = None,
    ) -> None:
        self.sentinels = sentinels
        self.service = service
        self.db = db
        self.password = password
        self.username = username
        self.sentinel_password = sentinel_password
        self.sentinel_username = sentinel_username


def _address(value: Any) -> tuple[str, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        host, port = value
    elif isinstance(value, str) and value.rpartition(":")[0]:
        host, _, port = value.rpartition(":")
    else:
        raise ValueError(f"{value!r} is not host:port")
    if not host or not str(port).isdigit():
        raise ValueError(f"{value!r} is not host:port")
    return str(host), int(port)


def parse_sentinel_url(url: str) -> SentinelSpec:
    """``sentinel://[[user]:password@]host:port[,host:port…]/SERVICE[/DB]
    [?sentinel_password=…&sentinel_username=…]``; raises ``ValueError``."""
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(url)
    if parts.scheme != "sentinel":
        raise ValueError(f"{url!r} does not start with sentinel://")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    if not hosts:
        raise ValueError(f"{url!r} names no sentinel (host:port after //)")
    addresses = [_address(h) for h in hosts.split(",")]
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2:
        raise ValueError(f"{url!r}: the path must be /SERVICE_NAME or /SERVICE_NAME/DB")
    if len(path) == 2 and not path[1].isdigit():
        raise ValueError(f"{url!r}: the database {path[1]!r} is not a number")
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    unknown = set(query) - {"sentinel_password", "sentinel_username"}
    if unknown:
        raise ValueError(
            f"{url!r}: unknown parameter(s) {sorted(unknown)}; allowed: "
            "sentinel_password, sentinel_username"
        )
    return SentinelSpec(
        addresses,
        unquote(path[0]),
        db=int(path[1]) if len(path) == 2 else 0,
        password=password,
        username=username,
        sentinel_password=query.get("sentinel_password"),
        sentinel_username=query.get("sentinel_username"),
    )


def sentinel_spec(options: Mapping[str, Any]) -> SentinelSpec | None:
    """The Sentinel settings of ``options``, or ``None`` for another shape."""
    url = options.get("URL")
    if isinstance(url, str) and url.startswith("sentinel://"):
        return parse_sentinel_url(url)
    if not options.get("SENTINELS"):
        return None
    sentinels = options["SENTINELS"]
    if isinstance(sentinels, str) or not isinstance(sentinels, (list, tuple)):
        raise ValueError("SENTINELS must be a list of 'host:port' or (host, port)")
    if not sentinels:
        raise ValueError("SENTINELS is empty")
    service = options.get("SERVICE_NAME")
    if not isinstance(service, str) or not service:
        raise ValueError("SENTINELS needs SERVICE_NAME (the name the sentinels watch)")
    db = options.get("DB", 0)
    if not isinstance(db, int) or isinstance(db, bool) or db < 0:
        raise ValueError(f"DB must be a number >= 0, got {db!r}")
    return SentinelSpec(
        [_address(a) for a in sentinels],
        service,
        db=db,
        password=options.get("PASSWORD"),
        username=options.get("USERNAME"),
        sentinel_password=options.get("SENTINEL_PASSWORD"),
        sentinel_username=options.get("SENTINEL_USERNAME"),
    )


def check_options(options: Mapping[str, Any], owner: str) -> list[str]:
    """Problems with the Redis settings in ``options`` as sentences; never connects.

    ``owner`` names the class whose options these are, for the messages.
    """
    shapes = [k for k in ("URL", "SENTINELS", "CACHE") if options.get(k)]
    if not shapes:
        return [
            f"{owner} needs OPTIONS['URL'] (redis://host:port/db or "
            "sentinel://host:port,…/SERVICE_NAME/db), OPTIONS['SENTINELS'] with "
            "OPTIONS['SERVICE_NAME'], or OPTIONS['CACHE'] (the alias of a Redis "
            "cache in CACHES)."
        ]
    if len(shapes) > 1:
        return [
            f"{owner}: set only one of OPTIONS {shapes}, they all say where Redis is."
        ]
    url = options.get("URL")
    if url is not None and not isinstance(url, str):
        return [f"{owner}: OPTIONS['URL'] must be a string, got {url!r}."]
    try:
        spec = sentinel_spec(options)
    except ValueError as exc:
        return [f"{owner}: OPTIONS Sentinel settings: {exc}."]
    if url and spec is None and url.partition("://")[0] not in _SCHEMES:
        return [
            f"{owner}: OPTIONS['URL'] {url!r} must start with redis://, rediss://, "
            "unix:// or sentinel://."
        ]
    cluster = options.get("CLUSTER", False)
    if not isinstance(cluster, bool):
        return [f"{owner}: OPTIONS['CLUSTER'] must be True or False, got {cluster!r}."]
    if cluster and (spec is not None or not url):
        return [
            f"{owner}: OPTIONS['CLUSTER'] = True needs OPTIONS['URL'] = "
            "redis://host:port of a cluster node (not Sentinel, not CACHE)."
        ]
    if cluster:
        try:
            cluster_nodes(str(url))
        except ValueError as exc:
            return [f"{owner}: OPTIONS['URL'] {url!r}: {exc}."]
    elif url and spec is None and "," in url.partition("://")[2].partition("/")[0]:
        return [
            f"{owner}: OPTIONS['URL'] {url!r} names several servers: set "
            "OPTIONS['CLUSTER'] = True for a Redis Cluster, or use sentinel:// "
            "for Sentinel."
        ]
    return []


def cluster_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster ``URL`` naming one node or several (``host:port,host:port`` in its
    network location): the URL of the first, and the ``(host, port)`` of the
    others; ``ValueError`` when one is not ``host:port``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    if not first:
        raise ValueError("names no node (host:port after //)")
    return (
        urlunsplit(parts._replace(netloc=f"{userinfo}{at}{first}")),
        [_address(other) for other in others],
    )


def _cache_client(alias: str) -> Any:
    from django.core.cache import caches
    from django.core.exceptions import ImproperlyConfigured

    cache = caches[alias]
    client = getattr(cache, "client", None)
    if client is not None and hasattr(client, "get_client"):  # django-redis
        return client.get_client(write=True)
    inner = getattr(cache, "_cache", None)
    if inner is not None and hasattr(inner, "get_client"):  # Django RedisCache
        return inner.get_client(write=True)
    raise ImproperlyConfigured(
        f"OPTIONS['CACHE'] = {alias!r} is not a Redis cache (django-redis or "
        "Django's RedisCache); point it at one or use OPTIONS['URL']."
    )


def _sentinel_kwargs(spec: SentinelSpec, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if spec.sentinel_password is not None:
        out["password"] = spec.sentinel_password
    if spec.sentinel_username is not None:
        out["username"] = spec.sentinel_username
    return out


def _data_kwargs(spec: SentinelSpec, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(kwargs, db=spec.db)
    if spec.password is not None:
        out["password"] = spec.password
    if spec.username is not None:
        out["username"] = spec.username
    return out


def sync_client(options: Mapping[str, Any], **kwargs: Any) -> Any:
    """A redis-py client for ``options`` (see the module's docstring).

    ``kwargs`` (timeouts, retry…) apply to the connections we build; a ``CACHE``
    client is the cache's own, used as configured there. Close what this returns
    unless it came from ``CACHE`` (:func:`owns_client`).
    """
    import redis

    if options.get("CACHE"):
        return _cache_client(options["CACHE"])
    spec = sentinel_spec(options)
    if spec is not None:
        from redis.sentinel import Sentinel

        sentinel = Sentinel(
            spec.sentinels,
            sentinel_kwargs=_sentinel_kwargs(spec, kwargs),
            **_data_kwargs(spec, kwargs),
        )
        return sentinel.master_for(spec.service)
    if options.get("CLUSTER"):
        from redis.cluster import ClusterNode, RedisCluster

        first, others = cluster_nodes(options["URL"])
        nodes = [ClusterNode(host, port) for host, port in others]
        return RedisCluster.from_url(first, startup_nodes=nodes or None, **kwargs)
    return redis.Redis.from_url(options["URL"], **kwargs)


def async_client(options: Mapping[str, Any], **kwargs: Any) -> Any:
    """The asyncio twin of :func:`sync_client` (always a new client: close it).

    For ``CACHE`` it connects where the cache's client connects (same server, or
    same sentinels and service), with the cache's credentials and ``kwargs``.
    """
    import redis.asyncio as aioredis

    if options.get("CACHE"):
        return _async_like(_cache_client(options["CACHE"]), kwargs)
    spec = sentinel_spec(options)
    if spec is not None:
        from redis.asyncio.sentinel import Sentinel

        sentinel = Sentinel(
            spec.sentinels,
            sentinel_kwargs=_sentinel_kwargs(spec, kwargs),
            **_data_kwargs(spec, kwargs),
        )
        return sentinel.master_for(spec.service)
    if options.get("CLUSTER"):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        first, others = cluster_nodes(options["URL"])
        nodes = [ClusterNode(host, port) for host, port in others]
        return RedisCluster.from_url(first, startup_nodes=nodes or None, **kwargs)
    return aioredis.Redis.from_url(options["URL"], **kwargs)


#: Connection settings carried over from a sync client to its asyncio twin.
_CARRIED = ("db", "username", "password", "host", "port", "path", "ssl_ca_certs")


def _async_like(client: Any, kwargs: Mapping[str, Any]) -> Any:
    import redis
    import redis.asyncio as aioredis

    pool = client.connection_pool
    own = {k: v for k, v in pool.connection_kwargs.items() if k in _CARRIED}
    own.update(kwargs)
    if hasattr(pool, "service_name"):  # Sentinel
        from redis.asyncio.sentinel import Sentinel

        manager = pool.sentinel_manager
        first = manager.sentinels[0].connection_pool.connection_kwargs
        addresses = [
            (
                s.connection_pool.connection_kwargs["host"],
                s.connection_pool.connection_kwargs["port"],
            )
            for s in manager.sentinels
        ]
        sentinel_kwargs = {
            k: v for k, v in first.items() if k in ("username", "password")
        }
        own.pop("host", None)
        own.pop("port", None)
        return Sentinel(
            addresses, sentinel_kwargs={**sentinel_kwargs, **_socket(kwargs)}, **own
        ).master_for(pool.service_name)
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        own.pop("host", None)
        own.pop("port", None)
        return aioredis.Redis(unix_socket_path=own.pop("path"), **own)
    own.pop("path", None)
    if issubclass(pool.connection_class, redis.SSLConnection):
        own["ssl"] = True
    return aioredis.Redis(**own)


def _socket(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if k.startswith("socket_")}


def owns_client(options: Mapping[str, Any]) -> bool:
    """Whether :func:`sync_client` built a new client (else it is a cache's)."""
    return not options.get("CACHE")


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a Redis Cluster client (routes keys by slot)."""
    return type(client).__name__ == "RedisCluster"


def refuse_cluster_node(client: Any, setting: str) -> None:
    """Raise ``ImproperlyConfigured`` when ``client`` is a plain (one-server) client
    of a Redis Cluster node: its multi-key commands and scripts would fail with
    ``MOVED``/``CROSSSLOT`` on keys of other nodes. One ``INFO cluster`` round trip;
    the driver's errors (server down) propagate for the caller to translate."""
    if is_cluster(client):
        return
    if str(client.info("cluster").get("cluster_enabled", 0)) == "1":
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(
            f"{setting} points at a Redis Cluster node with a one-server client: "
            "set OPTIONS['CLUSTER'] = True (with a redis:// URL of a node), or "
            "point it at a server that is not in a cluster."
        )


def ping(client: Any, timeout: float) -> None:
    """One ``PING`` on a new connection to the server of ``client`` whose connect
    and read time out after ``timeout`` seconds (the client's own connections may
    have none: a frozen server would hold them forever); raises redis-py's
    exceptions. A client without a single pool (``RedisCluster``) pings through
    its own connections."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        client.ping()
        return
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(socket_timeout=timeout, socket_connect_timeout=timeout)
    conn = pool.connection_class(**kwargs)
    try:
        conn.connect()  # Sentinel: finds the current primary here
        conn.send_command("PING")
        conn.read_response()
    finally:
        conn.disconnect()
