"""ASGI entry point: HTTP through Django, websockets (the live dashboard) through Channels, for
logged-in staff only (checked in the consumers) and from this site's own hosts only."""

import os

from django.core.asgi import get_asgi_application

from imqueue_site.typed_env import exit_on_bad_settings

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imqueue_site.settings")
exit_on_bad_settings()  # a variable the settings cannot take: the web server stops with its one line
django_asgi_app = get_asgi_application()  # before importing anything that touches models

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from experiments.live.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The Origin header must name one of ALLOWED_HOSTS (a page of another site cannot open a
        # socket with the user's cookie); the session cookie then gives scope["user"].
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
