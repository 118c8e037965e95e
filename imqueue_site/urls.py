from django.contrib import admin
from django.urls import include, path

from experiments.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("runs/", include("experiments.urls")),  # namespace "experiments"
    # django-prometheus's /metrics, after forgetting the gauges of processes that are gone
    path("metrics", metrics_view, name="prometheus-django-metrics"),
    path("dashboard/", include("experiments.dashboard_urls")),  # namespace "dashboard"
    path("", include("django_prometheus.urls")),
]
