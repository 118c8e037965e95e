"""The live dashboard's pages (namespace ``dashboard``); its websockets are in ``routing.py``."""

from django.urls import path

from experiments.live import views

app_name = "dashboard"

urlpatterns = [
    path("", views.dashboard, name="overview"),
    path("runs/<int:run_id>/", views.run_live, name="run"),
    path("runs/<int:run_id>/launch-again", views.run_launch_again, name="run_launch_again"),
    path("runs/<int:run_id>/cancel", views.run_cancel, name="run_cancel"),
]
