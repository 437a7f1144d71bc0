"""Where node heartbeats are kept: Redis when the app uses Redis, else the database.

A store keeps one record per node id (a JSON-able dict with ``heartbeat_at``) and
forgets records older than ``drop_after`` seconds whenever it is written or read.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError

from .. import metrics
from ..backends import PING_TIMEOUT
from ..circuit import Circuit, guard
from ..circuit import settings_of as circuit_settings
from ..exceptions import BackendUnavailable

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.nodes")


class NodeStore:
    """The contract: ``put``, ``remove``, ``all`` and ``ping``.

    Each raises ``BackendUnavailable`` (driver error as ``__cause__``) when the
    store cannot be reached. :func:`store_for` routes ``put``, ``remove`` and
    ``all`` through the store's circuit (:mod:`mega_cluster.circuit`).
    """

    name = "base"
    #: Set by :func:`store_for` (None for a store built another way).
    circuit: Circuit | None = None

    def put(self, record: Mapping[str, Any], *, drop_after: float) -> None:
        raise NotImplementedError

    def remove(self, node_id: str) -> None:
        raise NotImplementedError

    def all(self, *, drop_after: float) -> list[dict[str, Any]]:
        """Every record younger than ``drop_after`` seconds (older ones are deleted)."""
        raise NotImplementedError

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """Raise ``BackendUnavailable`` when the store does not answer within about
        ``timeout`` seconds."""
        raise NotImplementedError

    def databases(self) -> list[str]:
        """The Django database aliases the store writes (empty: none)."""
        return []

    def close(self) -> None:
        """Release connections (the store may be used again afterwards)."""

    def forget_connections(self) -> None:
        """Drop (never close) connections inherited from a parent process."""


class RedisNodeStore(NodeStore):
    """One Redis hash per app: node id -> JSON record."""

    name = "redis"

    def __init__(self, app: ClusterApp, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        prefix = self.options.get("KEY_PREFIX", "mc")
        # Same hash-tag shape as the Redis lock keys, so a cluster keeps them together.
        self.key = f"{prefix}:{{{app.name}}}:nodes"
        self.app_name = app.name
        self._client_obj: Any = None

    def _client(self) -> Any:
        if self._client_obj is None:
            from .. import redis_client

            timeout = float(self.options.get("SOCKET_TIMEOUT", 5))
            self._client_obj = redis_client.sync_client(
                self.options, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        return self._client_obj

    def _do(self, fn: Any) -> Any:
        import redis

        try:
            return fn(self._client())
        except redis.RedisError as exc:
            raise BackendUnavailable(f"node registry (Redis): {exc}") from exc

    def put(self, record: Mapping[str, Any], *, drop_after: float) -> None:
        data = json.dumps(dict(record))
        self._do(lambda c: c.hset(self.key, record["node_id"], data))
        # The hash lives as long as some node beats; a dead cluster leaves nothing.
        self._do(lambda c: c.expire(self.key, max(1, int(drop_after * 2))))

    def remove(self, node_id: str) -> None:
        self._do(lambda c: c.hdel(self.key, node_id))

    def all(self, *, drop_after: float) -> list[dict[str, Any]]:
        raw = self._do(lambda c: c.hgetall(self.key))
        now = time.time()
        records, stale = [], []
        for field, value in raw.items():
            try:
                record = json.loads(value)
                beat = float(record["heartbeat_at"])
            except (ValueError, TypeError, KeyError, IndexError, RecursionError) as exc:
                # never written by a node of ours: dropped, so one bad record
                # cannot break list_nodes() (and the admin Nodes page)
                reject_record(self.app_name, field, exc)
                stale.append(field)
                continue
            if now - beat > drop_after:
                stale.append(field)
            else:
                records.append(record)
        if stale:
            self._do(lambda c: c.hdel(self.key, *stale))
        return records

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        from .. import redis_client

        self._do(lambda c: redis_client.ping(c, timeout))

    def forget_connections(self) -> None:
        self._client_obj = None

    def close(self) -> None:
        client, self._client_obj = self._client_obj, None
        if client is not None:
            from .. import redis_client

            if redis_client.owns_client(self.options):
                client.close()


class DatabaseNodeStore(NodeStore):
    """Rows of :class:`~mega_cluster.models.Node` in the ``default`` database."""

    name = "database"

    def __init__(self, app: ClusterApp, options: Mapping[str, Any]) -> None:
        self.app_name = app.name
        self.alias = options.get("DATABASE", "default")

    @staticmethod
    def _model() -> Any:
        from ..models import Node

        return Node

    def _do(self, fn: Any) -> Any:
        from django.db import DatabaseError

        try:
            return fn(self._model().objects.using(self.alias))
        except DatabaseError as exc:
            raise BackendUnavailable(f"node registry (database): {exc}") from exc

    def put(self, record: Mapping[str, Any], *, drop_after: float) -> None:
        fields = {
            "host": record["host"],
            "pid": record["pid"],
            "role": record["role"],
            "version": record["version"],
            "started_at": record["started_at"],
            "heartbeat_at": record["heartbeat_at"],
            "details": {
                "channels": record["channels"],
                "consumers": record["consumers"],
            },
        }
        key = {"app_name": self.app_name, "node_id": record["node_id"]}

        def write(qs: Any) -> None:
            # Single autocommit statements, never a read-then-write transaction:
            # on SQLite that upgrade fails at once ("database is locked") instead
            # of waiting, for us or for whoever else writes.
            if qs.filter(**key).update(**fields):
                return
            try:
                qs.create(**key, **fields)
            except IntegrityError:  # another thread of this node beat us to it
                qs.filter(**key).update(**fields)

        self._do(write)

    def remove(self, node_id: str) -> None:
        self._do(lambda qs: qs.filter(app_name=self.app_name, node_id=node_id).delete())

    def all(self, *, drop_after: float) -> list[dict[str, Any]]:
        cutoff = time.time() - drop_after

        def read(qs: Any) -> list[Any]:
            qs = qs.filter(app_name=self.app_name)
            qs.filter(heartbeat_at__lt=cutoff).delete()
            return list(qs.order_by("node_id"))

        return [
            {
                "node_id": row.node_id,
                "app": row.app_name,
                "host": row.host,
                "pid": row.pid,
                "role": row.role,
                "version": row.version,
                "started_at": row.started_at,
                "heartbeat_at": row.heartbeat_at,
                # the registry checks these (a corrupt row is skipped there)
                "channels": _details(row, "channels", []),
                "consumers": _details(row, "consumers", {}),
            }
            for row in self._do(read)
        ]

    def databases(self) -> list[str]:
        return [self.alias]

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        # Bounded by the health view's deadline (no socket timeout of our own).
        from django.db import DatabaseError, connections

        try:
            with connections[self.alias].cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            raise BackendUnavailable(f"node registry (database): {exc}") from exc


def _details(row: Any, key: str, default: Any) -> Any:
    details = {} if row.details is None else row.details
    # not a dict: None, which the registry refuses (the row is skipped, counted)
    return details.get(key, default) if isinstance(details, dict) else None


def reject_record(app_name: str, field: Any, why: BaseException) -> None:
    """Count and log a node record that cannot be read (it is skipped)."""
    metrics.inc("records_rejected", app=app_name, source="nodes")
    logger.warning(
        "skipped a corrupt node record %r of app %s: %s: %s",
        field,
        app_name,
        type(why).__name__,
        why,
    )


def store_for(app: ClusterApp) -> NodeStore:
    """Redis when the app's locks or pub/sub use Redis, else the database; its
    calls run through a circuit named ``nodes``."""
    store = _choose(app)
    store.circuit = Circuit(
        app.name,
        "nodes",
        probe=functools.partial(type(store).ping, store),
        **circuit_settings(app),
    )
    guard(store, ("put", "remove", "all"), store.circuit)
    return store


def _choose(app: ClusterApp) -> NodeStore:
    for section in (app.settings.locks, app.settings.pubsub):
        backend = section.backend
        if backend is None or backend.alias != "redis":
            continue
        options = backend.options
        if options.get("URL") or options.get("CACHE") or options.get("SENTINELS"):
            return RedisNodeStore(app, options)
    queue = app.settings.event_queue.backend
    options = queue.options if queue is not None and queue.alias == "database" else {}
    return DatabaseNodeStore(app, options)
