from django.apps import AppConfig


class DataSourceConfig(AppConfig):
    name = "plugins.data_source"
    label = "data_source"
    verbose_name = "Data source (schema registry)"
    default_auto_field = "django.db.models.BigAutoField"
