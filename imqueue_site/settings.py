"""imqueue settings: the only module that reads the environment.

With nothing set, the project runs on SQLite in the project folder and the in-memory backend.
Every variable it reads is declared in ``imqueue_site/environment.py`` (``ENVIRONMENT_VARIABLES``
below), from which ``docs/reference/settings.md`` is generated.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

# a setting: the variables read below, as data (docs/reference/settings.md is generated from them)
from imqueue_site.environment import VARIABLES as ENVIRONMENT_VARIABLES  # noqa: F401
from imqueue_site.typed_env import Env

BASE_DIR = Path(__file__).resolve().parent.parent


# Every variable is read through ``env``, which names it and what it accepts when its value is
# wrong (``IMQ_RUN_TIMEOUT_S=1h: expected a whole number of seconds, ...``): manage.py and asgi.py
# print that line alone and exit.
env = Env(os.environ)

# Prometheus: the imqueue_* figures are written by the run's executor (a cluster process) and
# served by the web process, through prometheus_client's multiprocess mode: every process writes
# its values to files in this folder, and /metrics adds them up (experiments/prometheus/metrics.py). The
# client reads PROMETHEUS_MULTIPROC_DIR once, when it is first imported, so it is exported here,
# before any app (django_prometheus first) imports it. One folder per machine or container,
# never shared between containers (the files are named by pid); `manage.py metrics_reset`
# empties it before the web server and the cluster start.
IMQ_METRICS_DIR = Path(
    env.str("IMQ_METRICS_DIR") or env.str("PROMETHEUS_MULTIPROC_DIR") or Path(tempfile.gettempdir()) / "imqueue-metrics"
)
IMQ_METRICS_DIR.mkdir(parents=True, exist_ok=True)  # the client writes there from its import on
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(IMQ_METRICS_DIR)
# The cluster's own /metrics (`manage.py metrics_serve`), for a cluster in a container of its own
IMQ_CLUSTER_METRICS_PORT = env.int("IMQ_CLUSTER_METRICS_PORT", 9108, minimum=1, maximum=65535)

DEV_SECRET_KEY = "imqueue-dev-only-not-secret"
SECRET_KEY = env.str("DJANGO_SECRET_KEY", DEV_SECRET_KEY)
DEBUG = env.bool("DJANGO_DEBUG", True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", [])  # e.g. https://imq.example.org

# Production (DJANGO_DEBUG=false): `manage.py check --deploy` must report nothing that the
# docs/how-to/production.md does not justify; a test runs it.
if not DEBUG:
    if SECRET_KEY in ("", DEV_SECRET_KEY):
        raise ImproperlyConfigured(
            "DJANGO_DEBUG=false needs DJANGO_SECRET_KEY set to a long random value of your own, e.g. from "
            "python -c 'from django.core.management.utils import get_random_secret_key as k; print(k())'"
        )
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # false only where a proxy in front already redirects http to https
    SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", True)
    # An hour by default: long enough for `check --deploy`, short enough that a wrong setting
    # (a host that must also serve plain http) locks browsers out for an hour, not a year.
    # Raise it (31536000) once https is known to work everywhere.
    SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", 3600, unit="seconds", minimum=0)
    # Covers subdomains of the host that sends it (*.imq.example.org), not its siblings.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    # Preloading commits a whole registrable domain to https in browsers' built-in lists, which
    # is the domain owner's call, not this app's: opt in with DJANGO_SECURE_HSTS_PRELOAD=true.
    SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", False)
    if not SECURE_HSTS_PRELOAD:
        SILENCED_SYSTEM_CHECKS = ["security.W021"]  # "SECURE_HSTS_PRELOAD is not True": see above
    # Trust X-Forwarded-Proto only behind a proxy that sets it (and strips a client's own).
    if env.bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "django_q",
    "channels",
    "experiments",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # daphne serves no static files: WhiteNoise does, from the finders in development and from
    # STATIC_ROOT (``collectstatic``) in production, with one process and no front server needed
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "imqueue_site.urls"
ASGI_APPLICATION = "imqueue_site.asgi.application"
WSGI_APPLICATION = "imqueue_site.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_database = env.database("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
# django-prometheus wraps the database backend so that /metrics shows query figures
_engine = _database["ENGINE"].rsplit(".", 1)[-1]
if _engine in {"sqlite3", "postgresql", "mysql"}:
    _database["ENGINE"] = f"django_prometheus.db.backends.{_engine}"
if _engine == "sqlite3":
    # Several commands, the web server and the cluster write to one SQLite file at once. WAL lets
    # readers go on during a write; IMMEDIATE transactions take the write lock when they begin,
    # so a busy writer makes the others wait (up to the timeout) instead of failing with
    # "database is locked" when a read lock cannot be upgraded.
    _database.setdefault("OPTIONS", {}).update(
        {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
    )
    # Django's default test database for SQLite (in memory), said explicitly: django-prometheus's
    # engine name hides SQLite from pytest-django, whose parallel workers would otherwise name
    # their test databases after this file's path ("test_/path/db.sqlite3_gw0") and fail to open them
    _database.setdefault("TEST", {}).setdefault("NAME", ":memory:")
DATABASES = {"default": _database}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
WHITENOISE_USE_FINDERS = DEBUG  # development: no collectstatic needed
WHITENOISE_AUTOREFRESH = DEBUG  # development: files looked up per request, no STATIC_ROOT needed


# django-q2 executes the runs launched from the admin and by ``launchrun``/``sweep``
# (experiments/execution/tasks.py). With nothing configured its broker is the ORM, on this same database.
# One worker: a machine executes one run at a time, in launch order (a file lock makes a second
# cluster or a foreground ``runexperiment`` wait too: experiments/execution/run_lock.py). A run must never
# be executed twice: ``timeout`` (IMQ_RUN_TIMEOUT_S, the longest a run may take) stops a task
# that outlives it; ``retry``, after which the broker hands an unacknowledged task out again, is
# longer than that; ``max_attempts=1`` and ``ack_failures`` mean a task that failed or was
# stopped is acknowledged, never retried. Even a task handed out twice would find its run no
# longer queued and leave it alone (``run_execute`` starts only a queued run).
IMQ_RUN_TIMEOUT_S = env.int("IMQ_RUN_TIMEOUT_S", 3600, unit="seconds", minimum=1)
# A load host (experiments/hosts/heartbeat.py) is a qcluster started with IMQ_HOST_NAME=<name>: it takes its
# tasks from a queue of its own, ``imq-host-<name>`` (django-q2's ``cluster_name``, the broker's
# queue), so that the coordinator routes a run's share to it with ``async_task(..., cluster=)``.
# ``name`` stays the site's: django-q2 signs the ORM broker's payloads with it, so every cluster
# of one site must share it.
IMQ_HOST_NAME = env.str("IMQ_HOST_NAME").strip()
IMQ_HOST_QUEUE_PREFIX = "imq-host-"
# how often a host writes its heartbeat
IMQ_HOST_BEAT_S = env.float("IMQ_HOST_BEAT_S", 2, unit="seconds", positive=True)
# A host whose heartbeat is older than this does not answer (``manage.py hosts``, placement)
IMQ_HOST_ALIVE_S = env.float("IMQ_HOST_ALIVE_S", 3 * IMQ_HOST_BEAT_S + 1, unit="seconds", positive=True)
IMQ_HOST_CLOCK_EVERY_S = env.float("IMQ_HOST_CLOCK_EVERY_S", 60, unit="seconds", positive=True)  # offset measured again
# A distributed run fails, naming them, when its hosts' workers are not all ready by then
IMQ_HOST_JOIN_TIMEOUT_S = env.float("IMQ_HOST_JOIN_TIMEOUT_S", 30, unit="seconds", positive=True)
# Tests only, never set in production: this load host's clock reads this many seconds off, so
# that one machine can play a host whose clock is wrong. Its heartbeat's offset measurement adds
# it; its shares (``manage.py hostshare``) shift their whole process's time.time/time.time_ns by
# it before forking their workers (``experiments.hosts.heartbeat.clock_skew_install``), so that the offset
# measured and the events' timestamps are off alike and the latency correction can be checked.
IMQ_CLOCK_SKEW_S = env.float("IMQ_CLOCK_SKEW_S", 0, unit="seconds")  # either sign
Q_CLUSTER = {
    "name": env.str("IMQ_Q_CLUSTER_NAME", "imqueue"),
    **({"cluster_name": IMQ_HOST_QUEUE_PREFIX + IMQ_HOST_NAME} if IMQ_HOST_NAME else {}),
    "workers": env.int("IMQ_Q_WORKERS", 1, minimum=1),
    "recycle": 50,
    "timeout": IMQ_RUN_TIMEOUT_S,
    "retry": IMQ_RUN_TIMEOUT_S + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "orm": "default",
    "catch_up": False,
    "poll": 0.2,  # how often the ORM broker looks for a launched run: the click-to-start delay
}
# A running run whose executor has not written its heartbeat for this long is failed as lost
# (its cluster was killed, its machine restarted). The executor writes it every 2 s while the
# run goes on; the final drain may pause it for up to a minute on a slow server.
IMQ_STALE_AFTER_S = env.float("IMQ_STALE_AFTER_S", 120, unit="seconds", positive=True)
# The lock that makes the runs of one machine execute one at a time (experiments/execution/run_lock.py).
IMQ_RUN_LOCK_PATH = env.str("IMQ_RUN_LOCK_PATH", "/tmp/imqueue-runs.lock")

# The live dashboard (experiments/live/source.py). With nothing set, the websockets follow the runs'
# stored samples (one shared database read per run per interval in each web process), and the
# in-memory layer only serves Channels itself: it cannot cross from the cluster to the web
# process. With IMQ_CHANNEL_REDIS_URL (e.g. redis://127.0.0.1:6379/1), the executor publishes
# each sample to the run's group ``run-<id>`` through channels-redis.
IMQ_CHANNEL_REDIS_URL = env.url(
    "IMQ_CHANNEL_REDIS_URL", "", schemes=("redis", "rediss", "unix"), example="redis://127.0.0.1:6379/1"
)
if IMQ_CHANNEL_REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [IMQ_CHANNEL_REDIS_URL],
                "prefix": env.str("IMQ_CHANNEL_PREFIX", "imq-live"),
                # A group membership expires group_expiry seconds after the consumer joined (channels-redis
                # drops it without a word): a day, far beyond the longest run (IMQ_RUN_TIMEOUT_S), so a
                # page left open for a whole run keeps receiving; the page also re-joins every hour.
                "group_expiry": max(86400, 2 * IMQ_RUN_TIMEOUT_S),
                # Messages waiting for one consumer: a full channel drops new ones silently. A run sends
                # about one a second, so 1,000 covers a browser tab stalled for ~15 minutes; a gap that
                # still happens is filled from the database (each message names the sample before it).
                "capacity": 1000,
                "expiry": 120,  # seconds an undelivered message is kept
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# Queue servers: IMQ_<NAME>_URL, one per backend family (IMQ_POSTGRES_URL, IMQ_MYSQL_URL,
# IMQ_REDIS_URL, IMQ_AMQP_URL). A backend with no URL set uses its class's default_url,
# the local server on its standard port.
IMQ_URLS = env.prefixed("IMQ_", "_URL")
# the shorter names are accepted too; the IMQ_ ones win when both are set
for _short in ("REDIS_URL", "AMQP_URL", "MYSQL_URL", "POSTGRES_URL"):
    if env.str(_short) and f"IMQ_{_short}" not in IMQ_URLS:
        IMQ_URLS[f"IMQ_{_short}"] = env.str(_short)

# IMQ_LOG_LEVEL sets the engine's own loggers (``queues.*``, ``experiments.*``); every line goes
# to stderr with the time, process and logger, since a run's lines come from several processes.
# pika logs a failed connection in 5-8 lines of its own before our one-line error: those show
# only at DEBUG. Other libraries log at WARNING and above.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
IMQ_LOG_LEVEL = env.choice("IMQ_LOG_LEVEL", "WARNING", LOG_LEVELS)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "imq": {"format": "%(asctime)s %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "imq"}},  # stderr
    # the named loggers propagate to root's handler (so pytest's caplog sees them too)
    "loggers": {
        "queues": {"level": IMQ_LOG_LEVEL},
        "experiments": {"level": IMQ_LOG_LEVEL},
        "pika": {"level": "DEBUG" if IMQ_LOG_LEVEL == "DEBUG" else "CRITICAL"},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
}
