"""What the read-only operations pages share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import django
from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode
from django.utils.text import capfirst

from ..registry import ClusterApp, registry

#: Django 6.0 marks breadcrumbs up as ``<ol class="breadcrumbs">`` items, 5.2 as a
#: ``<div class="breadcrumbs">`` of links; each version's CSS styles only its own.
#: Pages that extend ``admin/change_list.html`` get the right one from Django itself;
#: ``breadcrumbs.html`` (confirmation and detail pages) follows this flag.
BREADCRUMBS_LIST = django.VERSION >= (6, 0)


@dataclass(frozen=True, kw_only=True)
class PageList:
    """The ``cl`` that the stock ``admin/change_list.html`` reads around the blocks
    a page fills in: the breadcrumbs (``opts``), the filter column (``has_filters``)
    and the result count in the footer (one page, no "Show all")."""

    opts: Any
    result_count: int
    has_filters: bool = False
    multi_page: bool = False
    show_all: bool = False
    can_show_all: bool = False


class OperationsAdmin(admin.ModelAdmin):
    """A page over a manager API: viewable with ``view_<model>``, never editable."""

    #: template under ``admin/mega_cluster/`` rendered by the changelist URL
    page_template = ""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_perm(self, request: HttpRequest, codename: str) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")

    def require(self, request: HttpRequest, codename: str) -> None:
        """403 unless the user has ``mega_cluster.<codename>``."""
        if not self.has_perm(request, codename):
            raise PermissionDenied

    def cluster_app(self, request: HttpRequest) -> ClusterApp:
        """The app named by ``?app=`` (default: the first configured one)."""
        apps = registry.apps()
        name = request.GET.get("app") or request.POST.get("app")
        if name is None:
            return next(iter(apps.values()))
        try:
            return apps[name]
        except KeyError:
            raise Http404(f"No cluster app named {name!r}.") from None

    def render(
        self, request: HttpRequest, template: str, title: str, **context: Any
    ) -> TemplateResponse:
        """``admin/mega_cluster/<template>`` with the admin's context; ``crumbs``
        lists ``(label, url)`` pairs after this page's changelist (the last one,
        the current page, with ``url=None``)."""
        app = context.pop("cluster_app", None) or self.cluster_app(request)
        changelist = (
            reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")
            + "?"
            + urlencode({"app": app.name})
        )
        crumbs = [
            (capfirst(self.opts.verbose_name_plural), changelist),
            *context.pop("crumbs", ()),
        ]
        return TemplateResponse(
            request,
            f"admin/mega_cluster/{template}",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": title,
                "cluster_app": app,
                "cluster_apps": list(registry.apps()),
                "has_view_permission": self.has_view_permission(request),
                "crumbs": crumbs,
                "breadcrumbs_list": BREADCRUMBS_LIST,
                **context,
            },
        )

    def log(self, request: HttpRequest, object_id: str, message: str) -> None:
        """An admin log entry on this page's model saying who did what."""
        user_id = request.user.pk
        if user_id is None:  # admin_view lets only staff users in
            raise PermissionDenied
        LogEntry.objects.create(
            user_id=user_id,
            content_type_id=ContentType.objects.get_for_model(
                self.model, for_concrete_model=False
            ).pk,
            object_id=object_id,
            object_repr=object_id[:200],
            action_flag=CHANGE,
            change_message=message,
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        return self.page(request)

    def page(self, request: HttpRequest) -> HttpResponse:
        raise NotImplementedError

    def change_view(self, request: HttpRequest, object_id: str, *a: Any, **k: Any):
        raise Http404("Operations pages have no change form.")

    def history_view(self, request: HttpRequest, object_id: str, *a: Any, **k: Any):
        raise Http404("Operations pages have no history; see the admin log.")
