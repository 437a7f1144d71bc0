"""Queues: per-channel counters, dead letters with detail, retry and discard."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import urlencode

from ..exceptions import EventNotFound
from ..nodes.status import queue_rows
from .base import OperationsAdmin

#: dead letters read for the list and to find one by id
DEAD_LIMIT = 500

ACTIONS = {
    "retry": ("retry_event", "Retry", "queued again with a fresh attempt budget"),
    "discard": ("discard_event", "Discard", "deleted"),
}


class QueueAdmin(OperationsAdmin):
    def get_urls(self):
        return [
            path(
                "event/<str:event_id>/",
                self.admin_site.admin_view(self.event_view),
                name="mega_cluster_clusterqueue_event",
            ),
            path(
                "event/<str:event_id>/<str:action>/",
                self.admin_site.admin_view(self.action_view),
                name="mega_cluster_clusterqueue_action",
            ),
            *super().get_urls(),
        ]

    def _url(self, name: str, app: Any, **kwargs: Any) -> str:
        return (
            reverse(f"admin:mega_cluster_clusterqueue_{name}", kwargs=kwargs or None)
            + "?"
            + urlencode({"app": app.name})
        )

    def page(self, request: HttpRequest) -> HttpResponse:
        app = self.cluster_app(request)
        channel = request.GET.get("channel") or None
        errors = []
        try:
            nodes = [n.as_dict() for n in app.node_registry.list_nodes()]
        except Exception as exc:
            nodes = []
            errors.append(f"nodes: {type(exc).__name__}: {exc}")
        try:
            rows = queue_rows(app, nodes)
        except Exception as exc:
            rows = []
            errors.append(f"stats: {type(exc).__name__}: {exc}")
        try:
            dead = app.event_queue.dead_letters(channel, limit=DEAD_LIMIT)
        except Exception as exc:
            dead = []
            errors.append(f"dead letters: {type(exc).__name__}: {exc}")
        dead_rows = [
            {
                "id": d.id,
                "channel": d.channel,
                "attempts": d.attempts,
                "failed_at": d.failed_at,
                "error": (d.error or "").strip().splitlines()[-1:] or [""],
                "url": self._url("event", app, event_id=d.id),
            }
            for d in dead
        ]
        channels = [
            {
                "name": r["channel"],
                "url": reverse("admin:mega_cluster_clusterqueue_changelist")
                + "?"
                + urlencode({"app": app.name, "channel": r["channel"]}),
                "selected": r["channel"] == channel,
            }
            for r in rows
        ]
        return self.render(
            request,
            "queues.html",
            "Queues",
            cluster_app=app,
            rows=rows,
            dead=dead_rows,
            channel=channel,
            channels=channels,
            all_url=reverse("admin:mega_cluster_clusterqueue_changelist")
            + "?"
            + urlencode({"app": app.name}),
            errors=errors,
            backend=type(app.event_queue.backend).__name__,
        )

    def _find(self, app: Any, event_id: str) -> Any:
        for letter in app.event_queue.dead_letters(None, limit=DEAD_LIMIT):
            if letter.id == event_id:
                return letter
        raise Http404(f"No dead letter with id {event_id!r}.")

    def event_view(self, request: HttpRequest, event_id: str) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            self.require(request, "view_clusterqueue")
        app = self.cluster_app(request)
        letter = self._find(app, event_id)
        return self.render(
            request,
            "event_detail.html",
            f"Dead event {event_id}",
            cluster_app=app,
            event=letter,
            payload=json.dumps(letter.payload, indent=2, cls=DjangoJSONEncoder),
            can_retry=self.has_perm(request, "retry_event"),
            can_discard=self.has_perm(request, "discard_event"),
            retry_url=self._url("action", app, event_id=event_id, action="retry"),
            discard_url=self._url("action", app, event_id=event_id, action="discard"),
            back=self._url("changelist", app),
        )

    def action_view(
        self, request: HttpRequest, event_id: str, action: str
    ) -> HttpResponse:
        try:
            codename, label, done = ACTIONS[action]
        except KeyError:
            raise Http404(f"Unknown action {action!r}.") from None
        self.require(request, codename)
        app = self.cluster_app(request)
        back = self._url("changelist", app)
        try:
            letter = self._find(app, event_id)
        except Http404:
            self.message_user(
                request,
                f"Event {event_id} is not a dead letter (any more).",
                messages.WARNING,
            )
            return HttpResponseRedirect(back)
        if request.method != "POST":
            return self.render(
                request,
                "event_confirm.html",
                "Are you sure?",
                cluster_app=app,
                event=letter,
                label=label,
                action=action,
                back=self._url("event", app, event_id=event_id),
            )
        try:
            if action == "retry":
                app.event_queue.retry_dead(event_id)
            else:
                app.event_queue.discard_dead(event_id)
        except EventNotFound:
            self.message_user(
                request,
                f"Event {event_id} is not a dead letter (any more).",
                messages.WARNING,
            )
            return HttpResponseRedirect(back)
        self.log(
            request,
            event_id,
            f"{label} dead event {event_id} on channel {letter.channel!r} of cluster "
            f"app {app.name!r} ({letter.attempts} attempts).",
        )
        self.message_user(request, f"Event {event_id} {done}.", messages.SUCCESS)
        return HttpResponseRedirect(back)
