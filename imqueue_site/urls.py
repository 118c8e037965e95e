from django.contrib import admin
from django.urls import include, path

from experiments.prometheus.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("runs/", include("experiments.live.data_urls")),  # namespace "experiments"
    # django-prometheus's /metrics, after forgetting the gauges of processes that are gone
    path("metrics", metrics_view, name="prometheus-django-metrics"),
    path("dashboard/", include("experiments.live.urls")),  # namespace "dashboard"
    path("", include("django_prometheus.urls")),
]
