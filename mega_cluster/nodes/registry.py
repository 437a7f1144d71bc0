"""``app.node_registry``: this node's heartbeat and the list of the cluster's nodes."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .. import node
from ..backends import PING_TIMEOUT
from ..exceptions import BackendUnavailable
from .identity import database_identity
from .stores import NodeStore, reject_record, store_for

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.nodes")

#: The roles a node can have: a web process, or a ``runworker`` process.
ROLES = ("web", "worker")


@dataclass(frozen=True, kw_only=True)
class NodeInfo:
    """One node as the cluster sees it.

    Times are Unix timestamps; ``heartbeat_age`` is seconds since the last beat and
    ``alive`` is False once it exceeds ``NODE_TIMEOUT`` (the node is then listed as
    dead until ``2 * NODE_TIMEOUT``, when it is dropped).
    """

    node_id: str
    app: str
    host: str
    pid: int
    role: str
    version: str
    started_at: float
    heartbeat_at: float
    channels: list[str] = field(default_factory=list)
    consumers: dict[str, int] = field(default_factory=dict)
    #: the id of the node's database (``nodes.identity``; "" when unknown)
    database: str = ""
    heartbeat_age: float = 0.0
    alive: bool = True

    @property
    def status(self) -> str:
        return "alive" if self.alive else "dead"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status}


class NodeRegistry:
    """Heartbeats this node into the cluster store and lists every node.

    Started by ``app.start()`` (last, so it stops first): a daemon thread writes
    this node's record every ``NODE_HEARTBEAT`` seconds; ``stop()`` removes it.
    The store is Redis when the app's locks or pub/sub use Redis, else the
    database (:class:`~mega_cluster.models.Node`). ``runworker`` sets ``role`` to
    ``"worker"`` before starting the app.
    """

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        self.heartbeat: float = app.settings["NODE_HEARTBEAT"]
        self.timeout: float = app.settings["NODE_TIMEOUT"]
        self.store: NodeStore = store_for(app)
        self._role = "web"
        from .. import __version__

        self.version: str = __version__
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failing = False
        self._pid = os.getpid()
        #: this node's database id, read when the registry starts
        self.database = ""

    def __repr__(self) -> str:
        return f"<NodeRegistry app={self.app.name!r} store={self.store.name!r}>"

    @property
    def role(self) -> str:
        return self._role

    @role.setter
    def role(self, value: str) -> None:
        if value not in ROLES:
            raise ValueError(f"node role must be one of {ROLES}, got {value!r}.")
        self._role = value
        self._wake.set()  # publish the new role now, not at the next beat

    @property
    def drop_after(self) -> float:
        """Seconds after its last beat when a dead node is forgotten."""
        return 2 * self.timeout

    # this node --------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """This node's record as it is written at each beat."""
        built = self.app.built_components()
        channels: list[str] = []
        pubsub = built.get("pubsub_manager")
        if pubsub is not None:
            channels = sorted(pubsub.subscriptions())
        consumers: dict[str, int] = {}
        queue = built.get("event_queue")
        if queue is not None and getattr(queue, "consuming", False):
            only = queue.only_channels
            override = queue.concurrency_override
            for name, sub in queue.subscriptions().items():
                if only is None or name in only:
                    consumers[name] = override or sub.concurrency
        return {
            "node_id": self.app.node_id,
            "app": self.app.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "role": self._role,
            "version": self.version,
            "started_at": node.started_at(),
            "heartbeat_at": time.time(),
            "channels": channels,
            "consumers": consumers,
            "database": self.database,
        }

    def beat(self) -> None:
        """Write this node's record now (raises ``BackendUnavailable``)."""
        self.store.put(self.describe(), drop_after=self.drop_after)

    # the cluster ------------------------------------------------------------------

    def list_nodes(self, *, include_dead: bool = True) -> list[NodeInfo]:
        """Every node of the app, live ones first, then by node id.

        Dead nodes (no beat for ``NODE_TIMEOUT``) are included unless
        ``include_dead=False``; after ``2 * NODE_TIMEOUT`` they are gone.
        Raises ``BackendUnavailable`` when the store cannot be reached.
        """
        now = time.time()
        nodes = []
        for record in self.store.all(drop_after=self.drop_after):
            try:
                age = max(0.0, now - float(record["heartbeat_at"]))
                info = _info(record, age=age, alive=age <= self.timeout)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                field = record.get("node_id") if isinstance(record, dict) else None
                reject_record(self.app.name, field, exc)
                continue
            if info.alive or include_dead:
                nodes.append(info)
        return sorted(nodes, key=lambda n: (not n.alive, n.node_id))

    def get(self, node_id: str) -> NodeInfo | None:
        return next((n for n in self.list_nodes() if n.node_id == node_id), None)

    def ping(self, timeout: float = PING_TIMEOUT) -> None:
        """Raise ``BackendUnavailable`` when the store does not answer within about
        ``timeout`` seconds."""
        self.store.ping(timeout)

    # lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start heartbeating (idempotent); the first beat is written by the thread."""
        with self._lock:
            if self._pid != os.getpid():
                # Forked: the parent's thread and connections are not ours.
                self._thread = None
                self._wake, self._stopped = threading.Event(), threading.Event()
                self.store.forget_connections()
                self._pid = os.getpid()
            if self._thread is not None:
                return
            if not self.database:
                self.database = database_identity()
            self._stopped.clear()
            self._thread = threading.Thread(
                target=self._run,
                name=f"mega-cluster-heartbeat-{self.app.name}",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop heartbeating and remove this node's record (best effort)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stopped.set()
        self._wake.set()
        thread.join(timeout=self.heartbeat + 5)

    def _run(self) -> None:
        from django.db import connections

        try:
            while not self._stopped.is_set():
                with node.fork_guard():
                    self._beat_quietly()
                self._wake.wait(self.heartbeat)
                self._wake.clear()
            try:
                with node.fork_guard():
                    self.store.remove(self.app.node_id)
            except Exception as exc:
                logger.warning(
                    "node %s could not remove its registry entry: %s",
                    self.app.node_id,
                    exc,
                )
        finally:
            with node.fork_guard():
                self.store.close()
                if self.store.circuit is not None:
                    self.store.circuit.reset()  # ends its probe with the heartbeats
                # Database connections are per thread: close this thread's own.
                connections.close_all()

    def _beat_quietly(self) -> None:
        try:
            self.beat()
        except (BackendUnavailable, Exception) as exc:
            # One warning per outage, not one per beat.
            if not self._failing:
                logger.warning(
                    "node %s of app %s cannot heartbeat (%s); retrying every %gs",
                    self.app.node_id,
                    self.app.name,
                    exc,
                    self.heartbeat,
                )
            self._failing = True
        else:
            if self._failing:
                logger.info("node %s heartbeats again", self.app.node_id)
            self._failing = False


def _info(record: Mapping[str, Any], *, age: float, alive: bool) -> NodeInfo:
    return NodeInfo(
        node_id=str(record["node_id"]),
        app=str(record.get("app", "")),
        host=str(record.get("host", "")),
        pid=int(record.get("pid", 0)),
        role=str(record.get("role", "")),
        version=str(record.get("version", "")),
        started_at=float(record.get("started_at", 0)),
        heartbeat_at=float(record["heartbeat_at"]),
        channels=list(record.get("channels", [])),
        consumers=dict(record.get("consumers", {})),
        database=str(record.get("database") or ""),
        heartbeat_age=round(age, 3),
        alive=alive,
    )
