"""Websocket routes (``imqueue_site/asgi.py`` wraps them in the origin check and the session auth)."""

from django.urls import path

from experiments.live import consumers

websocket_urlpatterns = [
    path("ws/runs/", consumers.OverviewConsumer.as_asgi()),
    path("ws/runs/<int:run_id>/", consumers.RunConsumer.as_asgi()),
]
