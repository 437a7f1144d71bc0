"""What the read-only operations pages share."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.template.response import TemplateResponse

from ..registry import ClusterApp, registry


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
        app = context.pop("cluster_app", None) or self.cluster_app(request)
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
                **context,
            },
        )

    def log(self, request: HttpRequest, object_id: str, message: str) -> None:
        """An admin log entry on this page's model saying who did what."""
        LogEntry.objects.create(
            user_id=request.user.pk,
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
    ) -> TemplateResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        return self.page(request)

    def page(self, request: HttpRequest) -> TemplateResponse:
        raise NotImplementedError

    def change_view(self, request: HttpRequest, object_id: str, *a: Any, **k: Any):
        raise Http404("Operations pages have no change form.")

    def history_view(self, request: HttpRequest, object_id: str, *a: Any, **k: Any):
        raise Http404("Operations pages have no history; see the admin log.")
