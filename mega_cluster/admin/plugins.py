"""Plugins: enabled / installed state, with enable and disable on every node."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from ..exceptions import MegaClusterError
from ..models import PluginState
from ..registry import registry


class PluginStateAdmin(admin.ModelAdmin):
    list_display = ("name", "app_name", "version", "enabled", "installed", "loaded")
    list_filter = ("enabled", "installed", "app_name")
    search_fields = ("name",)
    readonly_fields = (
        "app_name",
        "name",
        "version",
        "enabled",
        "installed",
        "installed_at",
        "updated_at",
    )
    fields = readonly_fields
    actions = ["enable_plugins", "disable_plugins"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(boolean=True, description="loaded here")
    def loaded(self, state: PluginState) -> bool | None:
        app = registry.apps().get(state.app_name)
        plugin = app.plugins.get(state.name) if app is not None else None
        return None if plugin is None else bool(plugin.loaded)

    def _switch(self, request: HttpRequest, queryset: Any, enabled: bool) -> None:
        verb = "enabled" if enabled else "disabled"
        for state in queryset:
            app = registry.apps().get(state.app_name)
            if app is None or state.name not in app.plugins:
                self.message_user(
                    request,
                    f"Plugin {state.name!r} of app {state.app_name!r} is not "
                    "installed in this project.",
                    messages.ERROR,
                )
                continue
            try:
                if enabled:
                    app.enable_plugin(state.name)
                else:
                    app.disable_plugin(state.name)
            except MegaClusterError as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.log_change(request, state, f"{verb.capitalize()} on every node.")
            self.message_user(
                request,
                f"Plugin {state.name!r} {verb} on every node.",
                messages.SUCCESS,
            )

    @admin.action(description="Enable selected plugins", permissions=["change"])
    def enable_plugins(self, request: HttpRequest, queryset: Any) -> None:
        self._switch(request, queryset, True)

    @admin.action(description="Disable selected plugins", permissions=["change"])
    def disable_plugins(self, request: HttpRequest, queryset: Any) -> None:
        self._switch(request, queryset, False)
