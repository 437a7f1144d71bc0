"""Nodes: live and recently dead nodes of a cluster app."""

from __future__ import annotations

import time

from django.http import HttpRequest, HttpResponse

from ..nodes.identity import database_clash
from .base import OperationsAdmin, PageList


class NodeAdmin(OperationsAdmin):
    def page(self, request: HttpRequest) -> HttpResponse:
        app = self.cluster_app(request)
        registry = app.node_registry
        error, rows = None, []
        try:
            nodes = registry.list_nodes()
        except Exception as exc:
            nodes, error = [], f"{type(exc).__name__}: {exc}"
        now = time.time()
        for info in nodes:
            rows.append(
                {**info.as_dict(), "uptime": round(max(0.0, now - info.started_at), 1)}
            )
        return self.render(
            request,
            "nodes.html",
            "Nodes",
            cluster_app=app,
            cl=PageList(opts=self.opts, result_count=len(rows)),
            rows=rows,
            alive=sum(1 for n in nodes if n.alive),
            dead=sum(1 for n in nodes if not n.alive),
            error=error,
            clash=database_clash(app.name, rows),
            timeout=registry.timeout,
            heartbeat=registry.heartbeat,
            store=registry.store.name,
        )
