"""Locks: the held locks of a cluster app, with a guarded force release."""

from __future__ import annotations

from datetime import datetime

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import urlencode

from ..nodes.status import lock_rows
from .base import OperationsAdmin, PageList


class LockAdmin(OperationsAdmin):
    def get_urls(self):
        return [
            path(
                "force-release/",
                self.admin_site.admin_view(self.force_release_view),
                name="mega_cluster_clusterlock_force_release",
            ),
            *super().get_urls(),
        ]

    def page(self, request: HttpRequest) -> HttpResponse:
        app = self.cluster_app(request)
        query = request.GET.get("q", "").strip()
        error = None
        try:
            rows = lock_rows(app)
        except Exception as exc:
            rows, error = [], f"{type(exc).__name__}: {exc}"
        total = len(rows)
        if query:
            rows = [r for r in rows if query.lower() in r["key"].lower()]
        can_release = self.has_perm(request, "force_release_lock")
        for row in rows:
            # Shown in the admin's date format, like the other pages' times.
            row["acquired"] = datetime.fromisoformat(row["acquired_at"])
            row["release_url"] = (
                reverse("admin:mega_cluster_clusterlock_force_release")
                + "?"
                + urlencode({"app": app.name, "key": row["key"]})
            )
        return self.render(
            request,
            "locks.html",
            "Held locks",
            cluster_app=app,
            cl=PageList(opts=self.opts, result_count=len(rows)),
            rows=rows,
            total=total,
            query=query,
            error=error,
            can_release=can_release,
            backend=app.lock_manager.backend_name,
        )

    def force_release_view(self, request: HttpRequest) -> HttpResponse:
        self.require(request, "force_release_lock")
        app = self.cluster_app(request)
        key = request.POST.get("key") if request.method == "POST" else None
        key = key or request.GET.get("key", "")
        back = (
            reverse("admin:mega_cluster_clusterlock_changelist")
            + "?"
            + urlencode({"app": app.name})
        )
        held = next((r for r in lock_rows(app) if r["key"] == key), None)
        if held is None:
            self.message_user(
                request, f"Lock {key!r} is not held (any more).", messages.WARNING
            )
            return HttpResponseRedirect(back)
        if request.method != "POST":
            return self.render(
                request,
                "lock_force_release.html",
                "Are you sure?",
                cluster_app=app,
                crumbs=[("Force release", None)],
                lock=held,
                back=back,
            )
        released = app.lock_manager.force_release(key)
        if released:
            self.log(
                request,
                key,
                f"Force-released lock {key!r} of cluster app {app.name!r} held by "
                f"node {held['holder']} (fence {held['fence']}).",
            )
            self.message_user(
                request,
                f"Lock {key!r} released; holder {held['holder']} loses it at its "
                "next renewal.",
                messages.SUCCESS,
            )
        else:
            self.message_user(
                request, f"Lock {key!r} was already free.", messages.WARNING
            )
        return HttpResponseRedirect(back)
