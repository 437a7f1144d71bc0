"""Locks: the held locks of a cluster app, with a guarded force release."""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
                + urlencode(
                    {
                        "app": app.name,
                        "key": row["key"],
                        "holder": row["holder"],
                        "fence": row["fence"],
                    }
                )
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
        """Confirm, then free the one lease the operator saw.

        The confirmation form carries the holder and fence of the lease it showed;
        the POST frees the key only while that same lease holds it (the backend
        checks the fence in the same step as the release), so a lock that changed
        hands in between is left alone and the page says so.
        """
        self.require(request, "force_release_lock")
        app = self.cluster_app(request)
        data = request.POST if request.method == "POST" else request.GET
        key = data.get("key", "")
        back = (
            reverse("admin:mega_cluster_clusterlock_changelist")
            + "?"
            + urlencode({"app": app.name})
        )
        held = next((r for r in lock_rows(app) if r["key"] == key), None)
        if request.method != "POST":
            if held is None:
                self.message_user(
                    request, f"Lock {key!r} is not held (any more).", messages.WARNING
                )
                return HttpResponseRedirect(back)
            return self.render(
                request,
                "lock_force_release.html",
                "Are you sure?",
                cluster_app=app,
                crumbs=[("Force release", None)],
                lock=held,
                changed=_seen(data) not in (None, (held["holder"], held["fence"])),
                back=back,
            )
        seen = _seen(data)
        if seen is None:
            self.message_user(
                request,
                f"Lock {key!r}: the confirmation did not say which lease to release "
                "(holder and fence); nothing was released. Confirm again.",
                messages.ERROR,
            )
            return HttpResponseRedirect(back)
        holder, fence = seen
        if held is None:
            self.message_user(
                request,
                f"Lock {key!r} is not held any more; nothing was released.",
                messages.WARNING,
            )
            return HttpResponseRedirect(back)
        if (held["holder"], held["fence"]) != seen or not (
            app.lock_manager.force_release(key, fence=fence)
        ):
            now = next((r for r in lock_rows(app) if r["key"] == key), None)
            state = (
                "is not held any more"
                if now is None
                else f"is now held by node {now['holder']} (fence {now['fence']})"
            )
            self.message_user(
                request,
                f"Lock {key!r} changed hands since you confirmed releasing the lease "
                f"of node {holder} (fence {fence}): it {state}. Nothing was "
                "released.",
                messages.WARNING,
            )
            return HttpResponseRedirect(back)
        self.log(
            request,
            key,
            f"Force-released lock {key!r} of cluster app {app.name!r} held by "
            f"node {holder} (fence {fence}).",
        )
        self.message_user(
            request,
            f"Lock {key!r} released; holder {holder} loses it at its next renewal.",
            messages.SUCCESS,
        )
        return HttpResponseRedirect(back)


def _seen(data: Any) -> tuple[str, int] | None:
    """The (holder, fence) a request names, or None when it names none."""
    holder = data.get("holder")
    try:
        fence = int(data.get("fence", ""))
    except ValueError:
        return None
    return (holder, fence) if holder else None
