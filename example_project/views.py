from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from mega_cluster import get_app
from mega_cluster.registry import registry


def cluster_overview(request: HttpRequest) -> HttpResponse:
    """The cluster apps of this process, this node, and the loaded plugins."""
    apps = []
    for app in registry.apps().values():
        apps.append(
            {
                "name": app.name,
                "node_id": app.node_id,
                "started": app.started,
                "backends": {
                    section: (s.backend.alias or s.backend.path) if s.backend else "-"
                    for section, s in app.settings.sections.items()
                },
                "cache_store": app.settings.cache["DEFAULT_STORE"],
                "plugins": [
                    {
                        "name": p.name,
                        "class": type(p).__qualname__,
                        "version": p.version,
                        "enabled": p.enabled,
                        "loaded": p.loaded,
                        "dependencies": ", ".join(p.dependencies) or "-",
                    }
                    for p in app.plugins.values()
                ],
            }
        )
    notice = get_app().plugins.get("site_notice")
    return render(
        request,
        "overview.html",
        {"apps": apps, "notice": notice.current() if notice else None},
    )
