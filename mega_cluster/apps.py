from __future__ import annotations

from django.apps import AppConfig
from django.core.signals import setting_changed


class MegaClusterConfig(AppConfig):
    name = "mega_cluster"
    verbose_name = "Mega cluster"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Nothing here may connect to a server: parse settings, register checks,
        # discover plugins and hook the start (first request, Celery worker process,
        # first get_app(); see mega_cluster.autostart) only.
        from . import autostart, checks  # noqa: F401 - checks registers the checks
        from .registry import registry
        from .schedules import checks as schedule_checks  # noqa: F401 - registers

        autostart.install()
        from .tasks import consume

        consume.install()  # task queues are consumed as their channels

        setting_changed.connect(_on_setting_changed)
        from .conf import get_settings

        if not any(p.level == "error" for p in get_settings().problems):
            registry.populate()


def _on_setting_changed(*, setting: str, **kwargs: object) -> None:
    if setting in ("MEGA_CLUSTER", "INSTALLED_APPS", "DEBUG"):
        from .registry import registry

        registry.reset()
