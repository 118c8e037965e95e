from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("runs/", include("experiments.urls")),  # namespace "experiments"
    path("", include("django_prometheus.urls")),
]
