"""The JSON health view and the Prometheus metrics view (``mega_cluster.urls``)."""

from __future__ import annotations

import re
import time
from typing import Any

from django.core.cache import caches
from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from . import metrics, node
from .exceptions import BackendUnavailable, MegaClusterError
from .nodes.identity import database_clash
from .registry import ClusterApp, registry

#: primitive -> the app attribute whose ``.backend`` is pinged.
PINGED = (
    ("locks", "lock_manager"),
    ("pubsub", "pubsub_manager"),
    ("event_queue", "event_queue"),
)


def _check(fn: Any) -> dict[str, Any]:
    started = time.monotonic()
    try:
        fn()
    except (BackendUnavailable, DatabaseError, OSError) as exc:
        # The exception type only: driver messages can carry hosts or user names.
        return {"ok": False, "error": type(exc).__name__}
    except MegaClusterError as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "latency_ms": round((time.monotonic() - started) * 1000, 2)}


def _backend_name(app: ClusterApp, section: str) -> str:
    backend = app.settings.sections[section.upper()].backend
    if backend is None:
        return ""
    return backend.alias or backend.path


def app_health(app: ClusterApp) -> dict[str, Any]:
    """Each backend of ``app`` pinged, plus its node registry store."""
    checks: dict[str, Any] = {}
    for section, attr in PINGED:
        checks[section] = {
            "backend": _backend_name(app, section),
            **_check(lambda attr=attr: app.component(attr).backend.ping()),
        }
    alias = app.settings.cache["DEFAULT_STORE"]
    checks["cache"] = {"backend": alias, **_check(lambda: _cache_ping(alias))}
    registry_ = app.node_registry
    checks["nodes"] = {"backend": registry_.store.name, **_check(registry_.ping)}
    return checks


def _cache_ping(alias: str) -> None:
    try:
        caches[alias].get("mega_cluster:health")
    except (BackendUnavailable, DatabaseError, OSError):
        raise
    except Exception as exc:
        # Cache clients raise their own errors (redis.ConnectionError, django-redis
        # ConnectionInterrupted); any of them means the store did not answer.
        raise BackendUnavailable(f"cache {alias!r}: {type(exc).__name__}") from exc


def _database_ping(alias: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT 1")


_URL_RE = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)


def app_states() -> dict[str, dict[str, Any]]:
    """Per app: ``started`` in this process and ``start_error`` (URLs redacted).

    An app that failed to start makes the health view answer 503 with the reason.
    """
    return {
        name: {
            "started": app.started,
            "start_error": _URL_RE.sub("<url>", app.start_error)
            if app.start_error
            else None,
            "database_clash": _clash(app),
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
    """200 when every configured backend answers, else 503; no login, no secrets."""
    apps = {name: app_health(app) for name, app in registry.apps().items()}
    database = _check(lambda: _database_ping("default"))
    states = app_states()
    ok = database["ok"] and all(
        check["ok"] for checks in apps.values() for check in checks.values()
    )
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
        "database": database,
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
