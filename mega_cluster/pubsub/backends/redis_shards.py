"""Sharded pub/sub on a Redis Cluster (Redis >= 7): ``SSUBSCRIBE`` / ``SPUBLISH``.

Plain ``PUBLISH`` on a cluster is broadcast to every node over the cluster bus;
sharded pub/sub keeps a channel on the shard that owns its slot. An app's wire
channels carry its name as a hash tag, ``mc:{<app>}:<channel>``, so they all
hash to one slot: one subscriber connection, to the primary that owns that slot,
receives every channel of the app (``SSUBSCRIBE`` takes the channels of one slot
per command), and apps spread over the shards by name.

When the slot moves (a failover promotes a replica, a resharding migrates it),
the old owner unsubscribes its clients with a ``sunsubscribe`` push (or closes
the connection): the backend treats that as a lost connection, looks the owner
up again and reports the gap (``on_gap``), never a silent switch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ... import redis_client

#: The kinds of a sharded subscriber's replies.
MESSAGE = b"smessage"
SUBSCRIBED = b"ssubscribe"
UNSUBSCRIBED = b"sunsubscribe"


def wire_channel(app_name: str, channel: str) -> str:
    """``mc:{<app>}:<channel>``: every channel of an app in the slot of its name
    (app names cannot hold braces, validation.NAME_RE)."""
    return f"mc:{{{app_name}}}:{channel}"


def node_url(url: str, host: str, port: int) -> str:
    """``url`` (a cluster node's) pointed at ``host:port``, credentials kept."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


async def open_clients(
    options: Mapping[str, Any],
    slot_key: str,
    known: list[tuple[str, int]],
    **kwargs: Any,
) -> tuple[Any, Any, list[tuple[str, int]]]:
    """``(cluster, node, nodes)``: a cluster client (for ``SPUBLISH``, routed by
    slot), a one-server client of the primary that owns ``slot_key``'s slot now
    (for the subscriber connection), and every node the cluster named. The
    cluster is learnt from the nodes of ``OPTIONS["URL"]`` and ``known`` (those
    seen before: a reconnect still finds the cluster when the URL's node is
    gone). Close both clients."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    first, others = redis_client.cluster_nodes(options["URL"])
    startup = [ClusterNode(h, p) for h, p in dict.fromkeys([*others, *known])]
    cluster = RedisCluster.from_url(first, startup_nodes=startup or None, **kwargs)
    try:
        await cluster.initialize()  # reads the slot map
        owner = cluster.get_node_from_key(slot_key)
        if owner is None:
            raise ConnectionError(f"no node of the cluster serves {slot_key!r}")
        node = aioredis.Redis.from_url(
            node_url(first, owner.host, int(owner.port)), **kwargs
        )
        nodes = [(n.host, int(n.port)) for n in cluster.get_nodes()]
    except BaseException:
        await cluster.aclose()
        raise
    return cluster, node, nodes


def server_unsubscribed(reply: list[Any], ours: set[str], connect: str) -> bool:
    """Whether a ``sunsubscribe`` reply is the server dropping a channel we still
    want (its slot moved away from this node) rather than our own unsubscribe."""
    if len(reply) < 2 or not isinstance(reply[1], bytes):
        return False
    name = reply[1].decode()
    return name in ours or name == connect
