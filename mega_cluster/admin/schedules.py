"""Schedules: every periodic job with its next and last run; pause, resume, run now."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import urlencode

from ..schedules.scheduler import JobNotFound, get_schedules
from .base import OperationsAdmin, PageList

#: action -> (permission codename, label, what is done)
ACTIONS = {
    "pause": ("pause_schedule", "Pause", "paused on every node"),
    "resume": ("pause_schedule", "Resume", "resumed from its next tick"),
    "run": ("run_schedule", "Run now", "queued to run now"),
}


class ScheduleAdmin(OperationsAdmin):
    def get_urls(self):
        return [
            path(
                "job/<str:job>/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="mega_cluster_schedulestate_action",
            ),
            *super().get_urls(),
        ]

    def _url(self, app: Any, job: str | None = None, action: str = "") -> str:
        if job is None:
            url = reverse("admin:mega_cluster_schedulestate_changelist")
        else:
            url = reverse(
                "admin:mega_cluster_schedulestate_action",
                kwargs={"job": job, "action": action},
            )
        return url + "?" + urlencode({"app": app.name})

    def page(self, request: HttpRequest) -> HttpResponse:
        app = self.cluster_app(request)
        schedules = get_schedules(app)
        error = None
        try:
            statuses = schedules.status()
        except Exception as exc:
            statuses, error = [], f"{type(exc).__name__}: {exc}"
        can_pause = self.has_perm(request, "pause_schedule")
        rows = []
        for status in statuses:
            job, last = status.job, status.last_run
            toggle = "resume" if status.paused else "pause"
            rows.append(
                {
                    "name": job.name,
                    "schedule": job.schedule,
                    "source": job.source,
                    "paused": status.paused,
                    "next_run": status.next_run,
                    "last_tick": last.tick if last else None,
                    "outcome": last.status if last else "",
                    "manual": bool(last and last.manual),
                    "error": (last.error.strip().splitlines()[-1:] or [""])[0]
                    if last
                    else "",
                    "toggle": toggle if can_pause else None,
                    "toggle_label": ACTIONS[toggle][1],
                    "toggle_url": self._url(app, job.name, toggle),
                    "run_url": self._url(app, job.name, "run"),
                }
            )
        return self.render(
            request,
            "schedules.html",
            "Schedules",
            cluster_app=app,
            cl=PageList(opts=self.opts, result_count=len(rows)),
            rows=rows,
            can_run=self.has_perm(request, "run_schedule"),
            error=error,
        )

    def action_view(self, request: HttpRequest, job: str, action: str) -> HttpResponse:
        try:
            codename, label, done = ACTIONS[action]
        except KeyError:
            raise Http404(f"Unknown action {action!r}.") from None
        self.require(request, codename)
        app = self.cluster_app(request)
        schedules = get_schedules(app)
        back = self._url(app)
        try:
            found = schedules.job(job)
        except JobNotFound as exc:
            raise Http404(str(exc)) from None
        if request.method != "POST":
            return self.render(
                request,
                "schedule_confirm.html",
                "Are you sure?",
                cluster_app=app,
                crumbs=[(job, None), (label, None)],
                job=found,
                label=label,
                action=action,
                back=back,
            )
        if action == "pause":
            schedules.pause(job)
        elif action == "resume":
            schedules.resume(job)
        else:
            schedules.run_now(job)
        self.log(
            request, job, f"{label} periodic job {job!r} of cluster app {app.name!r}."
        )
        self.message_user(request, f"Periodic job {job!r} {done}.", messages.SUCCESS)
        return HttpResponseRedirect(back)
