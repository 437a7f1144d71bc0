"""The cluster app registry: :class:`ClusterApp` and :func:`get_app`.

A cluster app is a namespace (its name is on every channel, key and queue on the
wire) plus the managers of the five primitives. Managers are built lazily on first
attribute access and nothing connects before that, so ``AppConfig.ready()``,
``migrate`` and ``check`` never touch a server. ``start()`` runs the plugin lifecycle
and starts the built managers. Nobody has to call it: :meth:`Registry.ensure_started`
starts every app once per process (and again after a fork) on the first request,
in a Celery worker process and on the first ``get_app()`` (see
:mod:`mega_cluster.autostart`); ``runworker`` and the optional entry points
:mod:`mega_cluster.wsgi` / :mod:`mega_cluster.asgi` start them explicitly.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from django.apps import apps as django_apps
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import conf, node, startup
from .components import COMPONENTS, START_ORDER
from .exceptions import (
    AmbiguousApp,
    AppNotFound,
    AppNotReady,
    AppStartFailed,
    BackendUnavailable,
    MegaClusterError,
)
from .plugins.enabling import set_enabled
from .plugins.lifecycle import start_plugins, stop_plugins
from .plugins.loader import attach_plugins
from .startup import NOT_INSTALLED

if TYPE_CHECKING:
    from .cache import Cache, CacheManager
    from .events import EventQueue
    from .locks import LockManager
    from .nodes import NodeRegistry
    from .outbox import Outbox
    from .plugins.base import Plugin
    from .pubsub import PubSubManager
    from .sync_messages import SyncMessageManager

logger = logging.getLogger("mega_cluster.registry")


class ClusterApp:
    """One cluster app: a name, its parsed settings, its managers and plugins."""

    def __init__(self, settings: conf.AppSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.plugins: dict[str, Plugin] = {}
        self._components: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._started = False
        self._starting = False
        self._stopping = False
        #: forked child: the parent had started it (Registry.restart_after_fork)
        self.restart_pending = False
        #: Why the last ``start()`` in this process failed (``"Type: message"``), or
        #: None; shown by the health view, which then answers 503.
        self.start_error: str | None = None
        self.start_failed_at: float | None = None  # time.monotonic()

    def __repr__(self) -> str:
        return f"<ClusterApp {self.name!r} node={self.node_id!r}>"

    #: Set by ``testing.make_app(node_id=...)`` to run several nodes in one process.
    node_id_override: str | None = None

    @property
    def node_id(self) -> str:
        """This process's node id (same for every app of the process)."""
        return self.node_id_override or node.get_node_id()

    @property
    def started(self) -> bool:
        """True once ``start()`` completed in this process (False while it runs)."""
        return self._started and not self._starting

    @property
    def starting(self) -> bool:
        """True while ``start()`` runs (a plugin hook may reach the app meanwhile)."""
        return self._starting

    # managers ------------------------------------------------------------------

    def component(self, attr: str) -> Any:
        """The manager named ``attr``, built on first use."""
        try:
            return self._components[attr]
        except KeyError:
            pass
        if self._stopping:  # a thread of a stopping manager: build nothing, wait not
            raise MegaClusterError(f"cluster app {self.name!r} is stopping: no {attr}")
        with self._lock:
            if attr not in self._components:
                cls = import_string(COMPONENTS[attr])
                component = self._components[attr] = cls(self)
                # Built after start(): start it now, as start() would have.
                if self._started and hasattr(component, "start"):
                    self._start_component(attr, component)
            return self._components[attr]

    def _start_component(self, attr: str, component: Any) -> None:
        try:
            component.start()
        except BackendUnavailable as exc:
            if not self._starting or attr not in startup.SECTIONS:
                raise
            raise startup.unreachable(self, attr, exc) from exc

    def built_components(self) -> dict[str, Any]:
        """The managers built so far (never builds one)."""
        return dict(self._components)

    def discard_component(self, attr: str) -> None:
        """Stop and forget the manager ``attr`` if built (the next use builds anew)."""
        with self._lock:
            component = self._components.pop(attr, None)
        if component is not None and hasattr(component, "stop"):
            component.stop()

    @property
    def lock_manager(self) -> LockManager:
        return cast("LockManager", self.component("lock_manager"))

    @property
    def pubsub_manager(self) -> PubSubManager:
        return cast("PubSubManager", self.component("pubsub_manager"))

    @property
    def sync_message_manager(self) -> SyncMessageManager:
        return cast("SyncMessageManager", self.component("sync_message_manager"))

    @property
    def event_queue(self) -> EventQueue:
        return cast("EventQueue", self.component("event_queue"))

    @property
    def cache_manager(self) -> CacheManager:
        return cast("CacheManager", self.component("cache_manager"))

    @property
    def node_registry(self) -> NodeRegistry:
        return cast("NodeRegistry", self.component("node_registry"))

    @property
    def outbox(self) -> Outbox:
        """The transactional outbox and its relay (docs/delivery-semantics.md)."""
        return cast("Outbox", self.component("outbox"))

    @property
    def cache(self) -> Cache:
        """The app's default cache."""
        return self.cache_manager.default

    # lifecycle -------------------------------------------------------------------

    def start(self) -> ClusterApp:
        """Run the plugin lifecycle and start the built managers; idempotent."""
        with self._lock:
            if self._started:
                return self
            self._starting = True
            try:
                startup.check_servers(self)  # one rule: no server, no start
                self._started = True  # from here managers start as they are built
                start_plugins(self)
                self.component("node_registry")  # every started app heartbeats
                for attr in START_ORDER:
                    component = self._components.get(attr)
                    if component is not None and hasattr(component, "start"):
                        self._start_component(attr, component)
            except BaseException as exc:
                self._starting = False
                self.start_error = f"{type(exc).__name__}: {exc}"
                self.start_failed_at = time.monotonic()
                # Undo what did start (listeners, threads), so a later try is clean.
                self.stop()
                raise
            self._starting = False
            self.start_error = self.start_failed_at = None
            logger.info(
                "cluster app %s started on node %s with %d plugin(s)",
                self.name,
                self.node_id,
                len(self.plugins),
            )
            return self

    def stop(self) -> None:
        """Stop the managers in reverse start order and drop them; idempotent."""
        with self._lock:
            if self._started:
                stop_plugins(self)
            # A manager is dropped once it stopped: its threads may still use it
            # (and the others) while it stops; nothing is built meanwhile.
            self._stopping = True
            try:
                for attr in reversed(START_ORDER):
                    component = self._components.get(attr)
                    if component is not None and hasattr(component, "stop"):
                        try:
                            component.stop()
                        except Exception:
                            logger.exception(
                                "stopping %s of app %s failed", attr, self.name
                            )
                    self._components.pop(attr, None)
                self._components.clear()
            finally:
                self._stopping = False
            self._started = False

    def start_on_first_use(self) -> bool:
        """Start this app now if the process autostarts its apps and this one has
        not started yet (a plugin attribute read first); True when it started."""
        if registry.autostart and not self.started and registry.ready:
            if self in registry.apps().values():
                registry.ensure_started(raise_errors=True)
                return True
        return False

    def enable_plugin(self, name: str) -> None:
        """Enable a plugin: stored in the database, applied on every node."""
        set_enabled(self, name, True)

    def disable_plugin(self, name: str) -> None:
        """Disable a plugin: stored in the database, applied on every node."""
        set_enabled(self, name, False)

    def after_fork(self) -> None:
        """In a forked child: forget the parent's managers, note whether to restart."""
        # The parent's sockets and threads are not ours: forget them, never close them.
        # An app the parent had started is started again in the child on first use
        # (see Registry.restart_after_fork), never inside the fork handler itself.
        self.restart_pending = self._started
        self._components = {}
        self._lock = threading.RLock()
        self._started = False


class Registry:
    """All cluster apps of this process, built from the setting."""

    def __init__(self) -> None:
        self._apps: dict[str, ClusterApp] | None = None
        self._lock = threading.RLock()

    @property
    def ready(self) -> bool:
        return self._apps is not None

    def populate(self, settings: conf.ClusterSettings | None = None) -> None:
        """Build the apps (no connections) and discover their plugins."""
        with self._lock:
            if self._apps is not None:
                return
            settings = settings or conf.get_settings()
            settings.raise_for_errors()
            apps = {name: ClusterApp(s) for name, s in settings.apps.items()}
            attach_plugins(apps)
            self._apps = apps

    def apps(self) -> Mapping[str, ClusterApp]:
        if self._apps is None:
            if not django_apps.ready:
                raise AppNotReady(
                    "mega_cluster apps are not ready: call django.setup() (or run "
                    "through manage.py / the WSGI or ASGI entry point) before get_app()."
                )
            if not django_apps.is_installed("mega_cluster"):
                raise ImproperlyConfigured(NOT_INSTALLED)
            self.populate()
        assert self._apps is not None
        return self._apps

    def get(self, name: str | None = None) -> ClusterApp:
        apps = self.apps()
        if name is None:
            if len(apps) == 1:
                return next(iter(apps.values()))
            raise AmbiguousApp(
                f"Several cluster apps are configured ({', '.join(apps)}); "
                "call get_app(name)."
            )
        try:
            return apps[name]
        except KeyError:
            raise AppNotFound(
                f"No cluster app named {name!r}; configured: {', '.join(apps)}."
            ) from None

    def start_all(self) -> None:
        """Start every app now, raising the first failure (the entry points)."""
        self.start_in_children = self.serving = True
        for app in self.apps().values():
            if not app.started:
                app.start()
                startup.announce(app)
        self._ready_pid = os.getpid()

    def stop_all(self) -> None:
        with self._lock:
            self._ready_pid = None
            for app in (self._apps or {}).values():
                app.stop()

    def reset(self) -> None:
        """Stop every app and forget them (used when the setting changes in tests)."""
        with self._lock:
            self.stop_all()
            self._apps = None
            conf.clear_cache()

    def after_fork(self) -> None:
        """In a forked child (``node.on_fork``): every app forgets its parent's state."""
        self._lock = threading.RLock()
        for app in (self._apps or {}).values():
            app.after_fork()
        self.fork_pending = self.start_in_children or any(
            a.restart_pending for a in (self._apps or {}).values()
        )

    #: True in a forked child until the apps its parent had started are started.
    fork_pending = False
    #: Set by the entry points (``start_all()``): a forked child starts all apps
    #: before serving, even if the parent stopped them before forking, and even where
    #: ``autostart`` is off.
    start_in_children = False
    #: Process policy: start every app by itself (first request, Celery worker
    #: process, first ``get_app()``). Turned off in commands that must not start
    #: anything (``migrate``, ``check``... see :mod:`mega_cluster.autostart`).
    autostart = True
    #: True in a process that serves requests or runs Celery tasks (set by the
    #: hooks). Elsewhere (a shell, a script) the first ``get_app()`` starts the apps
    #: without consuming events: a short-lived process must not take work.
    serving = False
    #: Seconds before a failed start is tried again by ``ensure_started()``.
    retry_start_after = 5.0
    #: The pid in which every app is started (the fast path of ``ensure_started``).
    _ready_pid: int | None = None

    def ensure_started(self, *, raise_errors: bool = False) -> bool:
        """Start, once per process, every app that is not started; True if all run.

        Cheap once done (one pid comparison), so it can run on every request. In a
        forked child it starts the apps afresh (own node id, own connections). With
        ``autostart`` off it only restarts what a forked child's parent had started.
        A failure is recorded on the app (``start_error``), logged and printed; it is
        tried again at most every ``retry_start_after`` seconds. ``raise_errors``
        raises it (or ``AppStartFailed`` while waiting to retry) instead.
        """
        pid = os.getpid()
        if self._ready_pid == pid:
            return True
        node.check_fork()
        if not (self.autostart or self.fork_pending):
            return False
        with self._lock:
            if self._ready_pid == pid:
                return True
            forked, self.fork_pending = self.fork_pending, False
            ok = True
            for app in self.apps().values():
                wanted = self.autostart or (
                    forked and (self.start_in_children or app.restart_pending)
                )
                app.restart_pending = False
                if app.started or app.starting:  # starting: called from a hook
                    continue
                if not wanted:
                    ok = False
                    continue
                ok = self._try_start(app, raise_errors=raise_errors) and ok
            if ok:
                self._ready_pid = pid
            return ok

    def _try_start(self, app: ClusterApp, *, raise_errors: bool) -> bool:
        failed_at = app.start_failed_at
        if failed_at is not None and (
            time.monotonic() - failed_at < self.retry_start_after
        ):
            if raise_errors:
                raise AppStartFailed(
                    f"cluster app {app.name!r} failed to start on node "
                    f"{app.node_id}: {app.start_error} (tried again "
                    f"{self.retry_start_after:g}s after the failure; see the log)."
                )
            return False
        try:
            if not self.serving:
                app.component("event_queue").consume = False
            app.start()
        except Exception as exc:
            logger.exception("cluster app %s failed to start", app.name)
            startup.announce(app, error=exc, serving=self.serving)
            if raise_errors:
                raise
            return False
        startup.announce(app, serving=self.serving)
        return True

    def restart_after_fork(self) -> None:
        """Start, in this forked child, every app the parent process had started."""
        if self.fork_pending:
            self.ensure_started(raise_errors=True)


registry = Registry()
node.on_fork(registry.after_fork)
atexit.register(registry.stop_all)


def get_app(name: str | None = None) -> ClusterApp:
    """The cluster app named ``name``, or the only one when ``name`` is omitted.

    The first call in a process starts the apps (plugins loaded, listeners
    running) unless they run already or the process does not start them (see
    ``Registry.autostart``). Raises ``AppNotReady`` before Django is set up,
    ``ImproperlyConfigured`` when ``mega_cluster`` is not in ``INSTALLED_APPS``,
    ``AppNotFound`` for an unknown name, ``AmbiguousApp`` when several apps are
    configured and no name is given, and the start-up error (or ``AppStartFailed``)
    when the apps cannot start.
    """
    app = registry.get(name)
    registry.ensure_started(raise_errors=True)
    return app


def start(name: str | None = None) -> ClusterApp | None:
    """Start one app, or every app when ``name`` is omitted (entry points call this)."""
    if name is not None:
        return registry.get(name).start()
    registry.start_all()
    return None
