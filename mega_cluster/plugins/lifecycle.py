"""Running the plugin hooks: start, install once per cluster, enable, disable, stop."""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone

from ..exceptions import BackendUnavailable, ConfigurationError, PluginError

if TYPE_CHECKING:
    from ..registry import ClusterApp
    from .base import Plugin

logger = logging.getLogger("mega_cluster.plugins")

#: A claim older than this is taken over (its node died while installing).
INSTALL_CLAIM_TIMEOUT = 300.0
INSTALL_POLL = 0.05


def call_hook(plugin: Plugin, hook: str, *args: Any) -> Any:
    """Call a sync or async hook and return its result."""
    fn = getattr(plugin, hook)
    if inspect.iscoroutinefunction(fn):
        return async_to_sync(fn)(*args)
    result = fn(*args)
    if inspect.isawaitable(result):

        async def _await() -> Any:
            return await result

        return async_to_sync(_await)()
    return result


def _state_model():
    from ..models import PluginState

    return PluginState


def load_states(app: ClusterApp) -> dict[str, Any]:
    """PluginState rows of the app's plugins, created (enabled) when missing."""
    PluginState = _state_model()
    try:
        rows = {s.name: s for s in PluginState.objects.filter(app_name=app.name)}
        for name, plugin in app.plugins.items():
            if name not in rows:
                try:
                    with transaction.atomic():
                        rows[name] = PluginState.objects.create(
                            app_name=app.name, name=name, version=plugin.version
                        )
                except IntegrityError:  # another node created it first
                    rows[name] = PluginState.objects.get(app_name=app.name, name=name)
    except DatabaseError as exc:
        raise ConfigurationError(
            f"mega_cluster cannot read its plugin table ({exc}); run "
            "'manage.py migrate' before starting the cluster app."
        ) from exc
    return rows


def start_plugins(app: ClusterApp) -> None:
    """before_load, load (enabled plugins) then install (never-installed ones)."""
    states = load_states(app)
    enabled = [p for p in app.plugins.values() if states[p.name].enabled]
    for plugin in app.plugins.values():
        plugin.enabled = states[plugin.name].enabled
    from ..sync_messages.plugins import subscribe_plugins

    subscribe_plugins(app)  # sync messages, gaps, enable/disable from other nodes
    for plugin in enabled:
        call_hook(plugin, "before_load")
    for plugin in enabled:
        call_hook(plugin, "load")
        plugin.loaded = True
    for plugin in enabled:
        if not states[plugin.name].installed:
            install_once(plugin)


def stop_plugins(app: ClusterApp) -> None:
    for plugin in reversed(list(app.plugins.values())):
        if plugin.loaded:
            try:
                call_hook(plugin, "before_stop")
            except Exception:
                logger.exception("plugin %s before_stop() failed", plugin.name)
            plugin.loaded = False


def install_once(
    plugin: Plugin, *, claim_timeout: float = INSTALL_CLAIM_TIMEOUT
) -> bool:
    """Run ``plugin.install()`` unless another node did or does; True if this node did.

    The cluster lock ``mega_cluster.install.<plugin>`` serialises the installers
    (waiting up to ``claim_timeout``); inside it the guard is a conditional UPDATE
    on the plugin's row: exactly one node sees one row updated and installs; the
    others wait until the row says installed. The row claim keeps it safe with the
    process-local ``local`` lock backend. A claim left by a node that died is taken
    over after ``claim_timeout`` seconds; an ``install()`` that raises releases the
    claim and the error propagates.
    """
    manager = plugin.app.lock_manager
    lock = manager.acquire(
        f"mega_cluster.install.{plugin.name}", wait=claim_timeout, auto_extend=True
    )
    try:
        return _install_once(plugin, claim_timeout=claim_timeout)
    finally:
        with contextlib.suppress(BackendUnavailable):  # the row claim still guards
            lock.release()


def _install_once(plugin: Plugin, *, claim_timeout: float) -> bool:
    PluginState = _state_model()
    app = plugin.app
    rows = PluginState.objects.filter(app_name=app.name, name=plugin.name)
    while True:
        now = timezone.now()
        stale = now - timedelta(seconds=claim_timeout)
        claimed = (
            rows.filter(installed=False)
            .filter(install_claimed_at__isnull=True)
            .update(install_claimed_by=app.node_id, install_claimed_at=now)
        ) or (
            rows.filter(installed=False, install_claimed_at__lt=stale).update(
                install_claimed_by=app.node_id, install_claimed_at=now
            )
        )
        if claimed:
            break
        state = rows.get()
        if state.installed:
            return False
        time.sleep(INSTALL_POLL)
    try:
        logger.info("installing plugin %s on node %s", plugin.name, app.node_id)
        call_hook(plugin, "install")
    except BaseException:
        rows.filter(install_claimed_by=app.node_id).update(
            install_claimed_by="", install_claimed_at=None
        )
        raise
    rows.filter(install_claimed_by=app.node_id).update(
        installed=True, installed_at=timezone.now(), version=plugin.version
    )
    return True


def set_enabled(app: ClusterApp, name: str, enabled: bool) -> None:
    """Store the flag and apply it on this node (other nodes: see ``apply_enabled``)."""
    plugin = _get(app, name)
    if enabled:
        missing = [d for d in plugin.dependencies if not app.plugins[d].enabled]
        if missing:
            raise PluginError(
                f"Cannot enable plugin {name!r}: its dependencies {missing} are "
                "disabled. Enable them first."
            )
    else:
        dependants = [
            p.name for p in app.plugins.values() if name in p.dependencies and p.enabled
        ]
        if dependants:
            raise PluginError(
                f"Cannot disable plugin {name!r}: enabled plugins {dependants} depend "
                "on it. Disable them first."
            )
    _state_model().objects.filter(app_name=app.name, name=name).update(enabled=enabled)
    apply_enabled(app, name, enabled)
    from ..sync_messages.plugins import broadcast_enabled

    broadcast_enabled(app, name, enabled)  # the other nodes run apply_enabled


def apply_enabled(app: ClusterApp, name: str, enabled: bool) -> None:
    """Run the enable or disable hooks on this node (idempotent)."""
    plugin = _get(app, name)
    if plugin.enabled == enabled and plugin.loaded == enabled:
        return
    plugin.enabled = enabled
    if enabled:
        if not plugin.loaded:
            call_hook(plugin, "before_load")
            call_hook(plugin, "load")
            plugin.loaded = True
        state = _state_model().objects.get(app_name=app.name, name=name)
        if not state.installed:
            install_once(plugin)
        call_hook(plugin, "after_enable")
    else:
        plugin.loaded = False
        call_hook(plugin, "after_disable")


def _get(app: ClusterApp, name: str) -> Plugin:
    try:
        return app.plugins[name]
    except KeyError:
        raise PluginError(
            f"No plugin {name!r} in cluster app {app.name!r}; loaded: "
            f"{', '.join(app.plugins) or 'none'}."
        ) from None
