from django.contrib import admin

from mega_cluster.registry import registry

from .models import TokenPolicy


def _changed(name: str) -> None:
    for app in registry.apps().values():
        plugin = app.plugins.get("auth_policy")
        if plugin is not None:
            plugin.policy_changed(name)


@admin.register(TokenPolicy)
class TokenPolicyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "token_expires_in",
        "session_expires_in",
        "renew_window",
        "updated_at",
    )

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _changed(obj.name)
        if change and "name" in form.changed_data:
            _changed(form.initial["name"])

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        _changed(obj.name)

    def delete_queryset(self, request, queryset):
        names = list(queryset.values_list("name", flat=True))
        super().delete_queryset(request, queryset)
        for name in names:
            _changed(name)
