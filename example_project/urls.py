from django.contrib import admin
from django.urls import include, path

from . import views

urlpatterns = [
    path("", views.cluster_overview, name="overview"),
    path("admin/", admin.site.urls),
    path("cluster/", include("mega_cluster.urls")),
]
