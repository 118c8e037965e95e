"""RabbitMQ's management HTTP API, asked for what AMQP does not tell: a queue's unacked messages.

AMQP's ``queue.declare`` reports a queue's ready messages and consumers only; messages delivered
to consumers and not yet acked (up to the prefetch per consumer) are visible only through the
management plugin (``rabbitmq_management``, port 15672 by default) or ``rabbitmqctl`` (half a
second per call: too slow to sample every second). The API answers with the credentials and
vhost of the AMQP URL. Its figures are the broker's statistics, refreshed every
``collect_statistics_interval`` (5 s by default), so they lag the queue by up to that much.

Where the plugin is not enabled or not reachable the answer is ``None`` (never a guess), and
after a refused connection the client stops asking, so a run on a broker without the plugin
pays one failed connection, not one per sample.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from urllib.parse import quote, unquote, urlsplit

log = logging.getLogger(__name__)

TIMEOUT_S = 1.0


class ManagementApi:
    """The management API of the broker at ``amqp_url``, on ``port`` (0: never asked)."""

    def __init__(self, amqp_url: str, port: int) -> None:
        try:
            parts = urlsplit(amqp_url)
        except ValueError:  # a malformed URL: connecting reports it, in one line naming the setting
            parts, port = urlsplit(""), 0
        self.vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self.base = f"http://{parts.hostname or '127.0.0.1'}:{port}/api" if port else None
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def unacked(self, queue: str) -> int | None:
        """Messages of ``queue`` delivered and not yet acked, or ``None`` where the API cannot
        tell (not enabled, unreachable, no such figure yet)."""
        if self.base is None:
            return None
        url = f"{self.base}/queues/{quote(self.vhost, safe='')}/{quote(queue, safe='')}?columns=messages_unacknowledged"
        request = urllib.request.Request(url, headers={"Authorization": self.auth})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                figure = json.load(response).get("messages_unacknowledged")
        except urllib.error.HTTPError as exc:  # the API answered: a queue not yet in its statistics, or refused
            log.debug("rabbitmq management API: %s for %s", exc.code, queue)
            return None
        except (OSError, ValueError) as exc:  # not listening (the plugin is off), or not HTTP: stop asking
            log.info("rabbitmq management API not available at %s (%s): unacked messages not reported", self.base, exc)
            self.base = None
            return None
        return int(figure) if isinstance(figure, int) else None
