"""The JSON health view and the Prometheus metrics view (``mega_cluster.urls``)."""

from __future__ import annotations

import re
import time
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import health as health_checks
from . import metrics, node
from .nodes.identity import database_clash
from .registry import ClusterApp, registry


def app_health(app: ClusterApp) -> dict[str, Any]:
    """Each backend of ``app`` pinged at once (see :mod:`mega_cluster.health`)."""
    _ok, _databases, apps = health_checks.report([app])
    return apps[app.name]


_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def app_states(
    nodes_down: frozenset[str] = frozenset(),
) -> dict[str, dict[str, Any]]:
    """Per app: ``started`` in this process and ``start_error`` (URLs redacted).

    An app that failed to start makes the health view answer 503 with the reason.
    The node list of an app in ``nodes_down`` (its node store did not answer the
    health check) is not read: a hung store would hold the view past its deadline.
    """
    return {
        name: {
            "started": app.started,
            "start_error": _URL_RE.sub("<url>", app.start_error)
            if app.start_error
            else None,
            "database_clash": None if name in nodes_down else _clash(app),
        }
        for name, app in registry.apps().items()
    }


def _clash(app: ClusterApp) -> str | None:
    """Two deployments on one APP_NAME and broker (read from the node list)."""
    try:
        nodes = [n.as_dict() for n in app.node_registry.list_nodes()]
    except Exception:  # the nodes check above reports an unreachable store
        return None
    return database_clash(app.name, nodes)


@never_cache
@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """200 when every configured backend answers, else 503; no login, no secrets.

    Every backend is pinged at the same time and the answer comes within the
    ``HEALTH_TIMEOUT`` deadline even when a server hangs (docs/health-metrics.md).
    """
    ok, databases, apps = health_checks.report(list(registry.apps().values()))
    down = frozenset(name for name, checks in apps.items() if not checks["nodes"]["ok"])
    states = app_states(down)
    ok = ok and not any(
        state["start_error"] or state["database_clash"] for state in states.values()
    )
    first = next(iter(registry.apps().values()))
    body = {
        "status": "ok" if ok else "unavailable",
        "node": {
            "id": first.node_id,
            "role": first.node_registry.role,
            "started_at": node.started_at(),
        },
        "uptime": round(time.time() - node.started_at(), 3),
        "databases": databases,
        "apps": apps,
        "cluster_apps": states,
    }
    return JsonResponse(body, status=200 if ok else 503)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition; 404 without ``prometheus-client`` installed."""
    if not metrics.ENABLED:
        return HttpResponse(
            "prometheus-client is not installed: "
            'pip install "mega-cluster[prometheus]"\n',
            status=404,
            content_type="text/plain",
        )
    body, content_type = metrics.render()
    return HttpResponse(body, content_type=content_type)
