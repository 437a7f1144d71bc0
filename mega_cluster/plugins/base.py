"""The :class:`Plugin` base class every cluster-aware Django app subclasses."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from django.apps import AppConfig

    from ..cache import Cache
    from ..events import EventQueue
    from ..locks import LockManager
    from ..pubsub import PubSubManager
    from ..registry import ClusterApp
    from ..sync_messages.manager import Transaction


def _require_installed() -> None:
    """ImproperlyConfigured when settings are loaded without mega_cluster installed."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    if not settings.configured:
        return
    names = [str(a).split(".apps.")[0] for a in settings.INSTALLED_APPS]
    if "mega_cluster" not in names:
        from ..startup import NOT_INSTALLED

        raise ImproperlyConfigured(NOT_INSTALLED)


class Plugin:
    """A feature of the project, loaded on every node of a cluster app.

    Subclass it in ``<app>/plugin.py`` (or name it with ``plugin = "dotted.Path"`` on
    the app's ``AppConfig``). Class attributes:

    ``name``
        The plugin's name, used in channels and cache namespaces. Default: the app
        label.
    ``version``
        Stored in the database when the plugin is installed.
    ``dependencies``
        Names of plugins that must load first. An unknown name or a cycle is
        ``ImproperlyConfigured`` naming the plugins.

    Hooks, each sync or ``async def`` (awaited for you), all optional:

    * ``before_load()`` then ``load()`` on every node at start, in dependency order,
      for enabled plugins. Subscribe channels in ``before_load()``.
    * ``install()`` once per cluster, the first time the plugin starts on a
      database where it is not installed yet, under a cluster-wide guard.
    * ``after_enable()`` / ``after_disable()`` on every node when the plugin is
      enabled or disabled at run time.
    * ``before_stop()`` when the node stops, in reverse dependency order.
    * ``handle_sync_message(message)`` for this plugin's sync messages sent by other
      nodes; ``handle_sync_gap()`` when this node may have missed some.

    Injected on every instance: ``app``, ``logger``, ``cache``, ``create_cache()``,
    ``send_sync_message()``, ``pubsub``, ``event_queue``, ``lock_manager``.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.0.0"
    dependencies: ClassVar[Sequence[str]] = ()
    #: ``create_cache`` options per cache name (``self.cache`` is named after the
    #: plugin), seen by ``manage.py check``: ``{"schemas": {"shared": True}}``.
    caches: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: Periodic jobs by name, each ``{"method": "<method name>", "every": 60}`` or
    #: ``"cron": ...`` with the options of ``@periodic`` (docs/schedules.md).
    schedules: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(self, app: ClusterApp, app_config: AppConfig | None = None) -> None:
        self.app = app
        self.app_config = app_config
        if not type(self).name:
            label = app_config.label if app_config is not None else type(self).__name__
            self.name = label  # type: ignore[misc]
        self.logger = logging.getLogger(f"mega_cluster.plugins.{self.name}")
        self.loaded = False
        self.enabled = True
        self._cache: Cache | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _require_installed()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} app={self.app.name!r}>"

    def __getattr__(self, name: str) -> Any:
        # Only called for a missing attribute: one that load() sets. On first use in
        # a process where the app has not started yet, start it (as get_app() would)
        # and look again; otherwise say why the plugin has no such attribute.
        if name.startswith("_") or "loaded" not in self.__dict__:
            raise AttributeError(name)
        if not self.loaded:
            app = self.__dict__["app"]
            if app.start_on_first_use() and name in self.__dict__:
                return self.__dict__[name]
            raise AttributeError(
                f"{type(self).__name__!r} object has no attribute {name!r}: plugin "
                f"{self.name!r} is not loaded on node {app.node_id} ("
                + (
                    f"its cluster app {app.name!r} failed to start: {app.start_error}"
                    if app.start_error
                    else "disabled"
                    if app.started
                    else f"its cluster app {app.name!r} is not started"
                )
                + ")."
            )
        raise AttributeError(
            f"{type(self).__name__!r} object has no attribute {name!r}"
        )

    # hooks -------------------------------------------------------------------------

    def before_load(self) -> Any:
        """Called first at start on every node; subscribe channels here."""

    def load(self) -> Any:
        """Called after every enabled plugin's ``before_load()``."""

    def install(self) -> Any:
        """Called once per cluster, the first time the plugin starts."""

    def after_enable(self) -> Any:
        """Called on every node when the plugin is enabled at run time."""

    def after_disable(self) -> Any:
        """Called on every node when the plugin is disabled at run time."""

    def before_stop(self) -> Any:
        """Called when the node stops."""

    def handle_sync_message(self, message: Any) -> Any:
        """Receive a sync message this plugin sent from another node."""

    def handle_sync_gap(self) -> Any:
        """This node may have missed sync messages: reload state from the database."""
        self.logger.warning(
            "plugin %s may have missed sync messages on node %s; override "
            "handle_sync_gap() to reload its state",
            self.name,
            self.app.node_id,
        )

    # injected primitives -------------------------------------------------------------

    @property
    def sync_channel(self) -> str:
        """The channel of this plugin's sync messages (namespaced by app on the wire)."""
        return f"plugin:{self.name}"

    @property
    def cache(self) -> Cache:
        """A cache namespaced by the plugin's name, created on first use."""
        if self._cache is None:
            self._cache = self.create_cache(self.name)
        return self._cache

    def create_cache(self, name: str, **kwargs: Any) -> Cache:
        """Create a cache named ``plugin:<plugin name>:<name>`` in this app."""
        if name == self.name:
            full = f"plugin:{self.name}"
        else:
            full = f"plugin:{self.name}:{name}"
        options = {**type(self).caches.get(name, {}), **kwargs}
        return self.app.cache_manager.create_cache(full, **options)

    def send_sync_message(
        self, message: Any, *, transaction: Transaction = None
    ) -> None:
        """Send ``message`` to this plugin on the other nodes (after commit in atomic)."""
        return self.app.sync_message_manager.publish(
            self.sync_channel, message, transaction=transaction
        )

    @property
    def pubsub(self) -> PubSubManager:
        return self.app.pubsub_manager

    @property
    def event_queue(self) -> EventQueue:
        return self.app.event_queue

    @property
    def lock_manager(self) -> LockManager:
        return self.app.lock_manager
