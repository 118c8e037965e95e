from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("runs/", include("experiments.urls")),  # namespace "experiments"
    path("dashboard/", include("experiments.dashboard_urls")),  # namespace "dashboard"
    path("", include("django_prometheus.urls")),
]
