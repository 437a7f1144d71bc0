"""The plugins' rows in the database (``PluginState``): enabled, installed, version."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, IntegrityError, router, transaction

from ..exceptions import ConfigurationError, PluginError

if TYPE_CHECKING:
    from ..models import PluginState
    from ..registry import ClusterApp
    from .base import Plugin


def state_model() -> type[PluginState]:
    # Imported on use: models cannot be imported before Django's apps are ready,
    # and this module is imported by the registry at start-up.
    from ..models import PluginState

    return PluginState


def state_rows() -> Any:
    """``PluginState``'s manager on the database rows are written to.

    Every read of a plugin's state decides something (load it, install it, apply
    a flag), so none goes where a database router sends reads (a replica that may
    lag); ``router.db_for_write`` names the database for reads and writes alike.
    """
    model = state_model()
    return model.objects.db_manager(router.db_for_write(model))


def load_states(app: ClusterApp) -> dict[str, Any]:
    """PluginState rows of the app's plugins, created (enabled) when missing."""
    states = state_rows()
    try:
        rows = {s.name: s for s in states.filter(app_name=app.name)}
        for name, plugin in app.plugins.items():
            if name not in rows:
                try:
                    with transaction.atomic(using=states.db):
                        rows[name] = states.create(
                            app_name=app.name, name=name, version=plugin.version
                        )
                except IntegrityError:  # another node created it first
                    rows[name] = states.get(app_name=app.name, name=name)
    except DatabaseError as exc:
        raise ConfigurationError(
            f"mega_cluster cannot read its plugin table ({exc}); run "
            "'manage.py migrate' before starting the cluster app."
        ) from exc
    return rows


def get_plugin(app: ClusterApp, name: str) -> Plugin:
    """The plugin ``name`` of ``app``, or ``PluginError`` naming the loaded ones."""
    try:
        return app.plugins[name]
    except KeyError:
        raise PluginError(
            f"No plugin {name!r} in cluster app {app.name!r}; loaded: "
            f"{', '.join(app.plugins) or 'none'}."
        ) from None
