from django.contrib import admin, messages

from mega_cluster.registry import registry

from .models import Task, TaskQueueState


@admin.action(description="Cancel selected tasks (on whichever node runs them)")
def cancel_tasks(modeladmin, request, queryset):
    app = next(a for a in registry.apps().values() if "async_tasks" in a.plugins)
    plugin = app.plugins["async_tasks"]
    for task in queryset:
        plugin.cancel(str(task.pk))
    messages.info(request, f"Cancellation sent for {queryset.count()} task(s).")


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "percent",
        "attempts",
        "node_id",
        "created_at",
    )
    list_filter = ("status", "kind")
    readonly_fields = [f.name for f in Task._meta.fields]
    actions = [cancel_tasks]

    def has_add_permission(self, request):
        return False


@admin.register(TaskQueueState)
class TaskQueueStateAdmin(admin.ModelAdmin):
    list_display = ("name", "paused", "updated_at")
    readonly_fields = ("name", "paused", "updated_at")

    def has_add_permission(self, request):
        return False
