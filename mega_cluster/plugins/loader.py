"""Plugin discovery and dependency ordering (runs in ``ready()``; never connects)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from django.apps import AppConfig
from django.apps import apps as django_apps
from django.utils.module_loading import import_string

from ..exceptions import PluginError
from ..validation import NAME_RE
from .base import Plugin

if TYPE_CHECKING:
    from ..registry import ClusterApp


def plugin_class_for(app_config: AppConfig) -> type[Plugin] | None:
    """The ``Plugin`` subclass an app declares, or None when it is not a plugin.

    ``AppConfig.plugin = "dotted.path"`` wins; else the app's ``plugin`` module must
    define exactly one ``Plugin`` subclass of its own.
    """
    path = getattr(app_config, "plugin", None)
    if path:
        try:
            cls = import_string(path)
        except ImportError as exc:
            raise PluginError(
                f"App {app_config.label!r} names plugin {path!r}, which cannot be "
                f"imported: {exc}"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Plugin)):
            raise PluginError(
                f"App {app_config.label!r} names plugin {path!r}, which is not a "
                "subclass of mega_cluster.Plugin."
            )
        return cls
    module_name = f"{app_config.name}.plugin"
    try:
        found = importlib.util.find_spec(module_name) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        return None
    module = importlib.import_module(module_name)
    candidates = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, Plugin)
        and obj.__module__ == module.__name__
        and not obj.__dict__.get("abstract", False)
    ]
    if len(candidates) > 1:
        names = ", ".join(sorted(c.__name__ for c in candidates))
        raise PluginError(
            f"{module_name} defines several Plugin subclasses ({names}); set "
            f'plugin = "{module_name}.<Class>" on the AppConfig of {app_config.label!r}.'
        )
    return candidates[0] if candidates else None


def discover(
    app_configs: Iterable[AppConfig] | None = None,
) -> list[tuple[AppConfig, type[Plugin]]]:
    """Every (app config, plugin class) pair, in ``INSTALLED_APPS`` order."""
    configs = django_apps.get_app_configs() if app_configs is None else app_configs
    found = []
    for cfg in configs:
        cls = plugin_class_for(cfg)
        if cls is not None:
            found.append((cfg, cls))
    return found


def order(plugins: Mapping[str, Plugin]) -> list[str]:
    """Plugin names so that every plugin comes after its dependencies.

    Keeps the given order where dependencies allow. Raises ``PluginError`` naming
    the plugin and the unknown dependency, or the plugins of a cycle.
    """
    for name, plugin in plugins.items():
        for dep in plugin.dependencies:
            if dep not in plugins:
                raise PluginError(
                    f"Plugin {name!r} depends on {dep!r}, which is not a loaded "
                    f"plugin of cluster app {plugin.app.name!r}. Loaded: "
                    f"{', '.join(plugins) or 'none'}."
                )
    result: list[str] = []
    state: dict[str, str] = {}  # "visiting" | "done"

    def visit(name: str, path: list[str]) -> None:
        mark = state.get(name)
        if mark == "done":
            return
        if mark == "visiting":
            cycle = [*path[path.index(name) :], name]
            raise PluginError(
                f"Plugin dependency cycle: {' -> '.join(cycle)}. Remove one of these "
                "dependencies."
            )
        state[name] = "visiting"
        for dep in plugins[name].dependencies:
            visit(dep, [*path, name])
        state[name] = "done"
        result.append(name)

    for name in plugins:
        visit(name, [])
    return result


def attach_plugins(apps: Mapping[str, ClusterApp]) -> None:
    """Instantiate the discovered plugins on their cluster apps, in load order."""
    discovered = discover()
    labels = {cfg.label for cfg, _ in discovered}
    for app in apps.values():
        wanted = app.settings.plugins
        if wanted is not None:
            unknown = [label for label in wanted if label not in labels]
            if unknown:
                raise PluginError(
                    f"MEGA_CLUSTER app {app.name!r} PLUGINS lists {unknown}, which are "
                    "not installed plugin apps. Installed plugin apps: "
                    f"{', '.join(sorted(labels)) or 'none'}."
                )
        instances: dict[str, Plugin] = {}
        for cfg, cls in discovered:
            if wanted is not None and cfg.label not in wanted:
                continue
            plugin = cls(app, cfg)
            if not NAME_RE.fullmatch(plugin.name):
                raise PluginError(
                    f"Plugin name {plugin.name!r} of app {cfg.label!r} is not valid: "
                    "use letters, digits and _ . : -"
                )
            if plugin.name in instances:
                raise PluginError(
                    f"Two plugins are named {plugin.name!r} (apps "
                    f"{instances[plugin.name].app_config.label!r} and "  # type: ignore[union-attr]
                    f"{cfg.label!r}); set a distinct Plugin.name."
                )
            instances[plugin.name] = plugin
        app.plugins = {name: instances[name] for name in order(instances)}
