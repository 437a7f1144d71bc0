"""Queues: per-channel counters, dead letters with detail, retry and discard."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.serializers.json import DjangoJSONEncoder
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.http import urlencode

from ..events.backends.base import EVENT_STATES, DeadLetter, EventInfo
from ..exceptions import EventNotFound
from ..inbox import get_inbox
from ..nodes.status import queue_rows
from ..tasks import operations
from . import task_runs
from .base import OperationsAdmin, PageList

#: events read for the list and to find one by id
LIST_LIMIT = 500


def _as_info(letter: DeadLetter) -> EventInfo:
    failed = letter.failed_at.timestamp() if letter.failed_at else None
    return EventInfo(
        id=letter.id,
        channel=letter.channel,
        status="dead",
        payload=letter.payload,
        attempts=letter.attempts,
        error=letter.error,
        available_at=None,
        finished_at=failed,
    )


def _time(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None


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

    def action_url(self, app: Any, event_id: str, action: str) -> str:
        return self._url("action", app, event_id=event_id, action=action)

    def filter_url(self, app: Any, **params: Any) -> str:
        return self._filter_url(app, **params)

    def _filter_url(self, app: Any, **params: Any) -> str:
        query = {"app": app.name, **{k: v for k, v in params.items() if v}}
        return (
            reverse("admin:mega_cluster_clusterqueue_changelist")
            + "?"
            + urlencode(query)
        )

    def _list(self, app: Any, channel: str | None, status: str | None) -> list[Any]:
        queue = app.event_queue
        if queue.backend.supports_listing:
            return queue.events(channel, status, limit=LIST_LIMIT)
        return [_as_info(d) for d in queue.dead_letters(channel, limit=LIST_LIMIT)]

    def page(self, request: HttpRequest) -> HttpResponse:
        app = self.cluster_app(request)
        listing = app.event_queue.backend.supports_listing
        channel = request.GET.get("channel") or None
        status = request.GET.get("status") or None
        if status not in (None, *EVENT_STATES):
            raise Http404(f"Unknown event status {status!r}.")
        if not listing:
            status = "dead"
        errors = []
        task = request.GET.get("task") or None
        try:
            tasks = task_runs.context(self, app, task)
        except Exception as exc:
            tasks = {}
            errors.append(f"task runs: {type(exc).__name__}: {exc}")
        nodes: list[dict[str, Any]] | None
        try:
            nodes = [n.as_dict() for n in app.node_registry.list_nodes()]
        except Exception as exc:
            nodes = None  # consumers unknown: no channel is called unconsumed
            errors.append(f"nodes: {type(exc).__name__}: {exc}")
        try:
            rows = queue_rows(app, nodes)
        except Exception as exc:
            rows = []
            errors.append(f"stats: {type(exc).__name__}: {exc}")
        try:
            inbox = [
                {"consumer": name, **counts}
                for name, counts in get_inbox(app).stats().items()
            ]
        except Exception as exc:
            inbox = []
            errors.append(f"inbox: {type(exc).__name__}: {exc}")
        try:
            events = self._list(app, channel, status)
        except Exception as exc:
            events = []
            errors.append(f"events: {type(exc).__name__}: {exc}")
        event_rows = [
            {
                "id": e.id,
                "channel": e.channel,
                "status": e.status,
                "attempts": e.attempts,
                "when": _time(e.finished_at or e.available_at),
                "error": (e.error or "").strip().splitlines()[-1:] or [""],
                "url": self._url("event", app, event_id=e.id),
            }
            for e in events
        ]
        # Choices as the stock admin/filter.html reads them.
        channel_choices = [
            {
                "display": r["channel"],
                "query_string": self._filter_url(
                    app, channel=r["channel"], status=status
                ),
                "selected": r["channel"] == channel,
            }
            for r in rows
        ]
        channel_choices.insert(
            0,
            {
                "display": "All",
                "query_string": self._filter_url(app, status=status),
                "selected": channel is None,
            },
        )
        status_choices = [
            {
                "display": name,
                "query_string": self._filter_url(app, channel=channel, status=name),
                "selected": name == status,
            }
            for name in (EVENT_STATES if listing else ("dead",))
        ]
        if listing:
            status_choices.insert(
                0,
                {
                    "display": "All",
                    "query_string": self._filter_url(app, channel=channel),
                    "selected": status is None,
                },
            )
        return self.render(
            request,
            "queues.html",
            "Queues",
            cluster_app=app,
            cl=PageList(opts=self.opts, result_count=len(event_rows), has_filters=True),
            rows=rows,
            inbox=inbox,
            events=event_rows,
            listing=listing,
            channel=channel,
            status=status,
            channel_choices=channel_choices,
            status_choices=status_choices,
            errors=errors,
            backend=type(app.event_queue.backend).__name__,
            **tasks,
        )

    def _find(self, app: Any, event_id: str) -> Any:
        for letter in app.event_queue.dead_letters(None, limit=LIST_LIMIT):
            if letter.id == event_id:
                return _as_info(letter)
        if app.event_queue.backend.supports_listing:
            for event in app.event_queue.events(limit=LIST_LIMIT):
                if event.id == event_id:
                    return event
        raise Http404(f"No event with id {event_id!r} among the newest {LIST_LIMIT}.")

    def event_view(self, request: HttpRequest, event_id: str) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        app = self.cluster_app(request)
        event = self._find(app, event_id)
        dead = event.status == "dead"
        return self.render(
            request,
            "event_detail.html",
            f"Event {event_id}",
            cluster_app=app,
            crumbs=[(event_id, None)],
            event=event,
            when=_time(event.finished_at or event.available_at),
            payload=json.dumps(event.payload, indent=2, cls=DjangoJSONEncoder),
            can_retry=dead and self.has_perm(request, "retry_event"),
            can_discard=dead and self.has_perm(request, "discard_event"),
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
        if operations.recent_one(app, event_id) is not None:
            return task_runs.action(self, request, app, event_id, action)
        back = self._url("changelist", app)
        try:
            letter = self._find(app, event_id)
            if letter.status != "dead":
                raise Http404
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
                crumbs=[
                    (event_id, self._url("event", app, event_id=event_id)),
                    (label, None),
                ],
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
