from django.contrib import admin

from mega_cluster.registry import registry

from .models import Collection, Field


def _changed(name: str) -> None:
    for app in registry.apps().values():
        plugin = app.plugins.get("data_source")
        if plugin is not None:
            plugin.schema_changed(name)


class FieldInline(admin.TabularInline):
    model = Field
    extra = 0


@admin.register(Collection)
class CollectionAdmin(admin.ModelAdmin):
    """Edits here reach every node's in-memory registry after commit."""

    list_display = ("name", "title", "updated_at")
    search_fields = ("name", "title")
    inlines = [FieldInline]

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        _changed(form.instance.name)
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
