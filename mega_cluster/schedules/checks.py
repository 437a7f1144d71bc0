"""System checks of the periodic jobs (ids in docs/checks.md)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.exceptions import ImproperlyConfigured

from .. import conf


@register(Tags.compatibility)
def check_schedules(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every job can be built (functions import, names unique, options valid),
    ``SCHEDULES DATABASE`` is a database, and ``overlap=False`` has a cluster-wide
    lock backend to rely on."""
    from ..registry import registry
    from .discovery import collect

    parsed = conf.get_settings()
    if any(p.level == "error" for p in parsed.problems) or not registry.ready:
        return []  # the setting's own checks report it
    messages: list[CheckMessage] = []
    for app in registry.apps().values():
        where = f"MEGA_CLUSTER app {app.name!r} SCHEDULES"
        alias = app.settings.sections["SCHEDULES"]["DATABASE"]
        if alias is not None and alias not in settings.DATABASES:
            messages.append(
                Error(
                    f"{where} DATABASE is {alias!r}, which is not a DATABASES alias.",
                    hint=f"Use one of {', '.join(settings.DATABASES)}, or remove it "
                    "(default: the event queue's database).",
                    id="mega_cluster.E020",
                )
            )
        try:
            jobs = collect(app, ())
        except ImproperlyConfigured as exc:
            messages.append(
                Error(
                    str(exc),
                    hint="Fix the job's declaration (docs/schedules.md).",
                    id="mega_cluster.E021",
                )
            )
            continue
        local = app.settings.locks.backend
        no_overlap = sorted(name for name, job in jobs.items() if not job.overlap)
        if no_overlap and local is not None and local.alias == "local":
            messages.append(
                Warning(
                    f"Periodic job(s) {', '.join(no_overlap)} of cluster app "
                    f"{app.name!r} set overlap=False, but MEGA_CLUSTER LOCKS is "
                    "'local': a run on one node does not stop one on another.",
                    hint="Use the 'redis' or 'database' LOCKS backend.",
                    id="mega_cluster.W020",
                )
            )
    return messages
