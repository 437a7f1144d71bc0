"""``path("cluster/", include("mega_cluster.urls"))``: health and metrics views."""

from django.urls import path

from . import views

app_name = "mega_cluster"

urlpatterns = [
    path("health/", views.health, name="health"),
    path("metrics/", views.metrics_view, name="metrics"),
]
