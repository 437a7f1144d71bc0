"""An in-process cluster of the project's plugins, driven by the test.

:class:`Cluster` is what the ``cluster`` fixture gives a test (docs/testing.md).
Each node is a started :class:`~mega_cluster.registry.ClusterApp` with its own
node id and its own instance of every plugin of the project (``before_load``,
``load`` and ``install`` run as on a real node), on the embedded backends by
default: the ``memory`` pub/sub, ``local`` locks and the kit's memory event
queue, shared by the nodes of this cluster and no one else (the cluster has an
app name of its own). Messages wait until :meth:`Cluster.deliver`, events until
:meth:`Cluster.run_events`, and time moves when the test says so.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import secrets
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import conf
from ..events.backends.memory import MemoryEventStore
from ..exceptions import ConfigurationError
from ..locks.watchdog import get_watchdog
from ..plugins.loader import attach_plugins
from ..pubsub import runtime
from ..registry import ClusterApp
from ..registry import registry as project_registry
from . import faults
from .assertions import ClusterAssertions, NodeRef, node_id
from .clock import Clock
from .events import BACKEND_PATH, Attempt, ClusterEventBackend, EventRunner
from .schedules import ScheduleDriver
from .stores import MemoryNodeStore
from .wire import Message, Wire, capturing_errors

if TYPE_CHECKING:
    from ..locks.handle import Lock
    from ..plugins.base import Plugin

#: The embedded backends of kit nodes (each section merged with the test's).
NODE_DEFAULTS: dict[str, Any] = {
    "PUBSUB": {"BACKEND": "memory"},
    "LOCKS": {"BACKEND": "local"},
    "EVENT_QUEUE": {"BACKEND": BACKEND_PATH},
    # one beat at start (into the cluster's memory registry), none while tests run
    "NODE_HEARTBEAT": 3600.0,
    "NODE_TIMEOUT": 7200.0,
}

_numbers = itertools.count(1)


def merged(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """``base`` with ``extra`` on top; dict sections merge one level deep, and a
    section that names another ``BACKEND`` starts afresh (no foreign OPTIONS)."""
    result = copy.deepcopy(dict(base))
    for key, value in (extra or {}).items():
        current = result.get(key)
        if (
            isinstance(value, Mapping)
            and isinstance(current, Mapping)
            and value.get("BACKEND", current.get("BACKEND")) == current.get("BACKEND")
        ):
            result[key] = {**current, **copy.deepcopy(dict(value))}
        else:
            result[key] = copy.deepcopy(value)
    return result


class Cluster(ClusterAssertions):
    """Nodes of one cluster app in this process, and the controls of the test.

    Call it to start nodes: ``a, b = cluster(2)`` (node ids ``node-1``,
    ``node-2``) or ``web, worker = cluster(["web", "worker"])``; ``settings``
    (the shape of one app in ``MEGA_CLUSTER``) is merged over the embedded
    defaults for every node, ``node_settings`` per node id. ``plugins`` lists the
    plugin app labels to load (default: the project's, as ``MEGA_CLUSTER``
    gives them to ``app``, the project's only app unless named).
    """

    def __init__(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        plugins: Sequence[str] | None = None,
        app: str | None = None,
        name: str | None = None,
    ) -> None:
        self.name = name or f"kit{next(_numbers)}-{secrets.token_hex(4)}"
        self.settings: dict[str, Any] = {}
        self._plugins: list[str] | None = None
        self._app: str | None = None
        self.nodes: list[ClusterApp] = []
        self.configure(settings=settings, plugins=plugins, app=app)
        self.clock = Clock()
        self.wire = Wire()
        self.events = EventRunner(MemoryEventStore(), self.clock)
        self.node_store = MemoryNodeStore()
        self.schedules = ScheduleDriver(self.clock, lambda: self.nodes)
        self._loop_was_running = runtime.background_loop_running()

    def __repr__(self) -> str:
        ids = ", ".join(node.node_id for node in self.nodes)
        return f"<Cluster {self.name!r} nodes=[{ids}]>"

    def configure(
        self,
        *,
        settings: Mapping[str, Any] | None = None,
        plugins: Sequence[str] | None = None,
        app: str | None = None,
    ) -> Cluster:
        """Set what every node gets, before the first node starts: ``settings``
        (merged over the embedded defaults), ``plugins`` (app labels; default the
        project's) or ``app`` (whose ``PLUGINS`` to take when the project has
        several cluster apps)."""
        if self.nodes:
            raise RuntimeError(
                "configure() must come before the first node starts; pass "
                "settings= to cluster(...) for the nodes started later."
            )
        if settings is not None:
            self.settings = merged(self.settings, settings)
        if plugins is not None:
            if isinstance(plugins, str) or not all(isinstance(p, str) for p in plugins):
                raise TypeError(
                    f"plugins must be a list of app labels, got {plugins!r}."
                )
            self._plugins = list(plugins)
        if app is not None:
            self._app = app
        return self

    @property
    def plugin_labels(self) -> list[str] | None:
        """The plugin app labels nodes load (None: every installed plugin app)."""
        if self._plugins is not None:
            return self._plugins
        return _project_plugins(self._app)

    # nodes --------------------------------------------------------------------------

    def __call__(
        self,
        nodes: int | Sequence[str] = 2,
        *,
        settings: Mapping[str, Any] | None = None,
        node_settings: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> list[ClusterApp]:
        """Start ``nodes`` more nodes (a count or their ids) and return them."""
        if isinstance(nodes, bool) or not isinstance(nodes, int | list | tuple):
            raise TypeError(f"nodes must be a count or a list of ids, got {nodes!r}.")
        if isinstance(nodes, int):
            if nodes < 1:
                raise ValueError(f"nodes must be at least 1, got {nodes}.")
            first = len(self.nodes) + 1
            ids = [f"node-{i}" for i in range(first, first + nodes)]
        else:
            ids = list(nodes)
        unknown = set(node_settings or {}) - set(ids)
        if unknown:
            raise ValueError(
                f"node_settings names {sorted(unknown)}, which are not among the "
                f"nodes started: {ids}."
            )
        return [
            self.add_node(
                node_id,
                settings=merged(settings or {}, (node_settings or {}).get(node_id)),
            )
            for node_id in ids
        ]

    def add_node(
        self, node_id: str, *, settings: Mapping[str, Any] | None = None
    ) -> ClusterApp:
        """Build and start one node (plugins loaded, installed if never before)."""
        if not isinstance(node_id, str) or not node_id:
            raise ValueError(f"A node id is a non-empty string, got {node_id!r}.")
        if any(node.node_id == node_id for node in self.nodes):
            raise ValueError(f"The cluster already has a node {node_id!r}.")
        raw = merged(merged(NODE_DEFAULTS, self.settings), settings)
        raw.setdefault("PLUGINS", self.plugin_labels)
        problems: list[conf.SettingsProblem] = []
        parsed = conf.parse_app(self.name, raw, problems=problems)
        errors = [p for p in problems if p.level == "error"]
        if errors:
            raise ConfigurationError("; ".join(f"{p.msg} {p.hint}" for p in errors))
        node = ClusterApp(parsed)
        node.node_id_override = node_id
        attach_plugins({self.name: node})
        self.wire.attach(node)
        backend = node.event_queue.backend
        if isinstance(backend, ClusterEventBackend):
            backend.join(self.events.store, self.clock)
        if node.node_registry.store.name == "database":
            node.node_registry.store = self.node_store
        self.nodes.append(node)
        capturing_errors(node.start, raise_errors=True)
        self.schedules.attach(node)
        return node

    def node(self, node_id: str) -> ClusterApp:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(
            f"No node {node_id!r} in the cluster; its nodes: "
            f"{', '.join(n.node_id for n in self.nodes) or 'none yet'}."
        )

    def plugins(self, name: str) -> list[Plugin]:
        """Plugin ``name`` on every node, in node order (one instance per node)."""
        found = [node.plugins.get(name) for node in self.nodes]
        if not self.nodes or None in found:
            loaded = sorted({p for node in self.nodes for p in node.plugins})
            raise KeyError(
                f"No plugin {name!r} on the cluster's nodes; loaded: "
                f"{', '.join(loaded) or 'none'}."
            )
        return found  # type: ignore[return-value]

    def _nodes(self, node: NodeRef | Sequence[NodeRef] | None) -> list[ClusterApp]:
        if node is None:
            return list(self.nodes)
        refs = node if isinstance(node, list | tuple) else [node]
        return [self.node(node_id(ref)) for ref in refs]

    # messages -----------------------------------------------------------------------

    def deliver(
        self, *, raise_errors: bool = True, timeout: float = 5.0
    ) -> list[tuple[str, Message]]:
        """Deliver every pending pub/sub and sync message, in the order they
        arrived, and what their handlers send in turn, until nothing is left.

        Handlers run in this thread; debounced calls run at the end (their
        windows close), gaps (``cluster.unavailable("pubsub")``, dropped
        messages) run ``handle_sync_gap``. A handler that raised makes this raise
        ``AssertionError`` with its traceback unless ``raise_errors=False``. On a
        real pub/sub backend it first waits up to ``timeout`` seconds for the
        messages to arrive. Returns ``(node id, message)`` per delivery.
        """
        return capturing_errors(
            lambda: self.wire.deliver(timeout=timeout), raise_errors=raise_errors
        )

    def published(
        self,
        node: NodeRef | None = None,
        channel: str | None = None,
        *,
        kind: str | None = None,
    ) -> list[Message]:
        """What the nodes sent (pub/sub and sync messages), oldest first."""
        return [
            m
            for m in self.wire.sent
            if (node is None or m.node == node_id(node))
            and (channel is None or m.channel == channel)
            and (kind is None or m.kind == kind)
        ]

    def delivered(
        self, node: NodeRef, channel: str | None = None, *, kind: str | None = None
    ) -> list[Message]:
        """What ``node``'s handlers received so far, oldest first."""
        return [
            m
            for m in self.wire.delivered.get(node_id(node), [])
            if (channel is None or m.channel == channel)
            and (kind is None or m.kind == kind)
        ]

    def dropped(self, node: NodeRef, channel: str | None = None) -> list[Message]:
        """The messages lost on their way to ``node`` (``drop_next``, a node made
        unavailable), oldest first."""
        return [
            m
            for m in self.wire.dropped.get(node_id(node), [])
            if channel is None or m.channel == channel
        ]

    def drop_next(
        self, node: NodeRef, count: int = 1, *, channel: str | None = None
    ) -> None:
        """Lose the next ``count`` messages on their way to ``node`` (of
        ``channel`` only, if given). A later sync message from the same sender
        shows the gap and the node's plugins run ``handle_sync_gap()``."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be an int >= 1, got {count!r}.")
        self.wire.drop_next(node_id(node), count, channel)

    # events and time ----------------------------------------------------------------

    def run_events(
        self,
        channel: str | None = None,
        *,
        advance: bool = False,
        limit: int = 1000,
        node: NodeRef | Sequence[NodeRef] | None = None,
    ) -> list[Attempt]:
        """Run the due events of the cluster's queue, each on a node consuming its
        channel (in turn), in this thread; return the attempts.

        A failed attempt is retried with the queue's backoff on the cluster's
        clock and dead-lettered when its retries are spent, as on a real node.
        ``advance=True`` moves the clock to each next due event (retries,
        delays) until none is left: retries take no wall time. ``node`` limits
        which nodes may run events. Handler timeouts are not enforced here.
        """
        nodes = self._nodes(node)
        return self.events.run(nodes, channel=channel, advance=advance, limit=limit)

    def advance(self, seconds: float) -> float:
        """Move the cluster's clock ``seconds`` forward; the new time."""
        return self.clock.advance(seconds)

    def advance_schedules(
        self, seconds: float, *, node: NodeRef | Sequence[NodeRef] | None = None
    ) -> list[Attempt]:
        """Move the clock ``seconds`` forward tick by tick: at each periodic-job
        tick's time the tick is queued (once, as on real workers) and the due
        events run (``node`` limits where). No tick is missed and nothing
        sleeps; returns the attempts, oldest first."""
        target = self.clock.time() + seconds
        ran = self.run_events(node=node)
        while (due := self.schedules.next_due()) is not None and due <= target:
            self.clock.advance_to(due)  # every node looks at the schedule
            if self.schedules.next_due() == due:  # a float's rounding: a hair on
                self.clock.advance(1e-6)
            ran += self.run_events(node=node)
        self.clock.advance_to(target)
        return ran + self.run_events(node=node)

    @property
    def attempts(self) -> list[Attempt]:
        """Every attempt ``run_events()`` ran, oldest first."""
        return list(self.events.history)

    # faults -------------------------------------------------------------------------

    def unavailable(
        self, primitive: str, node: NodeRef | Sequence[NodeRef] | None = None
    ) -> contextlib.AbstractContextManager[None]:
        """``with cluster.unavailable("pubsub" | "locks" | "event_queue" |
        "cache", node):`` the backend of ``node`` (default every node) raises
        ``BackendUnavailable`` inside the block, as when its server is down."""
        return faults.unavailable(self._nodes(node), primitive, self.wire)

    def lose_lock(self, key: str) -> list[Lock]:
        """End the lease of ``key`` under the node holding it now: the key is
        free, the holder's handle is ``lost`` and its section ends with
        ``LockLost``. ``AssertionError`` when no node holds ``key``."""
        return faults.lose(self.nodes, key)

    def losing_lock(self, key: str) -> contextlib.AbstractContextManager[list[Lock]]:
        """``with cluster.losing_lock(key):`` a lock of ``key`` acquired in the
        block is lost as soon as it is granted (yields the handles lost)."""
        return faults.losing(self.nodes, key)

    # teardown -----------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every node and the threads the cluster started."""
        errors: list[BaseException] = []
        for node in reversed(self.nodes):
            try:
                node.stop()
            except Exception as exc:  # stop the others anyway
                errors.append(exc)
        self.nodes.clear()
        get_watchdog().stop_if_idle()
        if not self._loop_was_running and not _project_uses_pubsub():
            runtime.stop_background_loop()
        if errors:
            raise errors[0]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _project_plugins(app: str | None) -> list[str] | None:
    """The plugin labels the project's ``MEGA_CLUSTER`` gives app ``app``."""
    settings = conf.get_settings()
    if app is None:
        if len(settings.apps) != 1:
            raise ConfigurationError(
                f"MEGA_CLUSTER configures several apps ({', '.join(settings.apps)}); "
                "say which app's plugins the cluster loads: Cluster(app=name) or "
                "cluster.configure(app=name)."
            )
        parsed = next(iter(settings.apps.values()))
    else:
        try:
            parsed = settings.apps[app]
        except KeyError:
            raise ConfigurationError(
                f"No cluster app {app!r} in MEGA_CLUSTER; configured: "
                f"{', '.join(settings.apps)}."
            ) from None
    return list(parsed.plugins) if parsed.plugins is not None else None


def _project_uses_pubsub() -> bool:
    """True when an app of the project's own registry runs a pub/sub manager."""
    if not project_registry.ready:
        return False
    return any(
        app.built_components().get("pubsub_manager") is not None
        for app in project_registry.apps().values()
    )
