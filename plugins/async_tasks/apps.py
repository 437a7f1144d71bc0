from django.apps import AppConfig


class AsyncTasksConfig(AppConfig):
    name = "plugins.async_tasks"
    label = "async_tasks"
    verbose_name = "Async tasks"
    default_auto_field = "django.db.models.BigAutoField"
