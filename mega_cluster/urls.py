"""``path("cluster/", include("mega_cluster.urls"))``: health and metrics views."""

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.urls import path

from . import views
from .startup import NOT_INSTALLED

if not apps.is_installed("mega_cluster"):  # URLconfs load once apps are ready
    raise ImproperlyConfigured(NOT_INSTALLED)

app_name = "mega_cluster"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("metrics/", views.metrics_view, name="metrics"),
]
