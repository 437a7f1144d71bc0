from django.apps import AppConfig


class SiteNoticeConfig(AppConfig):
    name = "plugins.site_notice"
    label = "site_notice"
    verbose_name = "Site notice"
    default_auto_field = "django.db.models.BigAutoField"
