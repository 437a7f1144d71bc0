"""Outbox: the sync messages and events written in transactions, unsent first."""

from __future__ import annotations

import time
from typing import Any

from django.contrib import admin
from django.http import HttpRequest


class SentFilter(admin.SimpleListFilter):
    """Unsent rows by default (what a relay still has to send); all on request."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("unsent", "unsent"), ("sent", "sent"), ("all", "all")]

    def value(self) -> str:
        return super().value() or "unsent"

    def choices(self, changelist: Any):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string(
                    {self.parameter_name: lookup}
                ),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        if self.value() == "unsent":
            return queryset.filter(sent_at__isnull=True)
        if self.value() == "sent":
            return queryset.filter(sent_at__isnull=False)
        return queryset


class OutboxAdmin(admin.ModelAdmin):
    """Read-only: rows are sent by their sender or the relay, never by hand."""

    list_display = (
        "id",
        "app_name",
        "kind",
        "channel",
        "seq",
        "node",
        "waiting",
        "attempts",
        "sent",
    )
    list_filter = (SentFilter, "kind", "app_name")
    search_fields = ("channel", "node")
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="waiting")
    def waiting(self, obj: Any) -> str:
        end = obj.sent_at if obj.sent_at is not None else time.time()
        return f"{max(0.0, end - obj.created_at):.1f}s"

    @admin.display(boolean=True, description="sent")
    def sent(self, obj: Any) -> bool:
        return obj.sent_at is not None
