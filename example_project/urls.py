from django.contrib import admin
from django.urls import include, path

from . import plugin_views, views

urlpatterns = [
    path("", views.cluster_overview, name="overview"),
    path("admin/", admin.site.urls),
    path("cluster/", include("mega_cluster.urls")),
    path("auth-policy/", plugin_views.auth_policy, name="auth-policy"),
    path("data-source/", plugin_views.data_source, name="data-source"),
    path("tasks/", plugin_views.tasks, name="tasks"),
    path("locks/", plugin_views.locks, name="locks"),
]
