"""The environment variables ``settings.py`` reads: name, default, what each is for, as data.

``docs/reference/settings.md`` is generated from this table (``manage.py docsreference``), and a
test checks it against ``settings.py``: every variable the settings read is declared here, and a
literal default written there is the one declared here. The queue servers' URLs
(``IMQ_<NAME>_URL``) are not listed: each backend class declares its own (``url_setting``,
``default_url``), and the page lists them from there.

Pure data with no imports from the project or Django, so that ``settings.py`` can read its
defaults from it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variable:
    """One environment variable. ``default`` is the value as it would be written in the
    environment (``None``: unset, or computed, which ``default_text`` then says in words)."""

    name: str
    default: str | None
    help: str
    group: str
    default_text: str = ""


SITE, RUNS, HOSTS, LIVE, METRICS, PRODUCTION = (
    "the site",
    "runs and their executor",
    "load hosts",
    "the live dashboard",
    "Prometheus",
    "production (DJANGO_DEBUG=false)",
)

VARIABLES: tuple[Variable, ...] = (
    Variable(
        "DATABASE_URL",
        None,
        "where experiments and runs are stored (`postgres://...` for Postgres), as a dj-database-url URL",
        default_text="`sqlite:///<project>/db.sqlite3`",
        group=SITE,
    ),
    Variable("DJANGO_DEBUG", "true", "development mode; `false` switches to the production settings", group=SITE),
    Variable(
        "DJANGO_SECRET_KEY",
        None,
        "Django's secret key; required, long and random, when `DJANGO_DEBUG=false`",
        default_text="a development key",
        group=SITE,
    ),
    Variable(
        "DJANGO_ALLOWED_HOSTS",
        "127.0.0.1,localhost,[::1],testserver",
        "comma-separated host names the site answers to (and the live page's websockets accept)",
        group=SITE,
    ),
    Variable(
        "DJANGO_CSRF_TRUSTED_ORIGINS",
        "",
        "comma-separated origins trusted for forms posted over https, e.g. `https://imq.example.org`",
        group=SITE,
    ),
    Variable(
        "IMQ_LOG_LEVEL",
        "WARNING",
        "level of the engine's loggers (`queues`, `experiments`): DEBUG, INFO, WARNING, ERROR or CRITICAL",
        group=SITE,
    ),
    Variable(
        "IMQ_Q_WORKERS",
        "1",
        "the django-q2 cluster's workers; keep 1: a machine executes one run at a time",
        group=RUNS,
    ),
    Variable(
        "IMQ_Q_CLUSTER_NAME",
        "imqueue",
        "the django-q2 cluster's name, which signs its tasks: every cluster of one site shares it",
        group=RUNS,
    ),
    Variable(
        "IMQ_RUN_TIMEOUT_S",
        "3600",
        "seconds a launched run may take before the cluster stops it; it is never retried",
        group=RUNS,
    ),
    Variable(
        "IMQ_STALE_AFTER_S",
        "120",
        "a running run whose executor's heartbeat is older than this many seconds is failed as lost",
        group=RUNS,
    ),
    Variable(
        "IMQ_RUN_LOCK_PATH",
        "/tmp/imqueue-runs.lock",
        "the file whose lock makes a machine's runs execute one at a time",
        group=RUNS,
    ),
    Variable(
        "IMQ_HOST_NAME",
        "",
        "makes a `qcluster` a load host of that name, taking its tasks from the queue `imq-host-<name>`",
        group=HOSTS,
    ),
    Variable("IMQ_HOST_BEAT_S", "2", "seconds between a load host's heartbeats", group=HOSTS),
    Variable(
        "IMQ_HOST_ALIVE_S",
        None,
        "a host whose heartbeat is older than this many seconds does not answer",
        default_text="3 x `IMQ_HOST_BEAT_S` + 1 (7)",
        group=HOSTS,
    ),
    Variable("IMQ_HOST_CLOCK_EVERY_S", "60", "seconds between measurements of a host's clock offset", group=HOSTS),
    Variable(
        "IMQ_HOST_JOIN_TIMEOUT_S",
        "30",
        "a distributed run fails, naming them, when its hosts' workers are not all ready within this many seconds",
        group=HOSTS,
    ),
    Variable(
        "IMQ_CLOCK_SKEW_S",
        "0",
        "tests only: this load host's clock reads this many seconds off, to check the latency correction",
        group=HOSTS,
    ),
    Variable(
        "IMQ_CHANNEL_REDIS_URL",
        "",
        "a Redis URL (e.g. `redis://127.0.0.1:6379/1`): samples reach the live page through channels-redis; "
        "unset, the page follows the database",
        group=LIVE,
    ),
    Variable("IMQ_CHANNEL_PREFIX", "imq-live", "the channels-redis key prefix", group=LIVE),
    Variable(
        "IMQ_METRICS_DIR",
        None,
        "prometheus_client's multiprocess folder, one per machine or container (exported as "
        "`PROMETHEUS_MULTIPROC_DIR`)",
        default_text="`PROMETHEUS_MULTIPROC_DIR`, else `<system temp dir>/imqueue-metrics`",
        group=METRICS,
    ),
    Variable(
        "PROMETHEUS_MULTIPROC_DIR",
        None,
        "read when `IMQ_METRICS_DIR` is unset; the settings set it to the folder they chose",
        group=METRICS,
    ),
    Variable(
        "IMQ_CLUSTER_METRICS_PORT",
        "9108",
        "where `manage.py metrics_serve` serves the cluster's metrics",
        group=METRICS,
    ),
    Variable(
        "DJANGO_SECURE_SSL_REDIRECT",
        "true",
        "redirect http to https; `false` only where a proxy in front already does",
        group=PRODUCTION,
    ),
    Variable(
        "DJANGO_SECURE_HSTS_SECONDS",
        "3600",
        "HSTS lifetime; raise it (31536000) once https is known to work everywhere",
        group=PRODUCTION,
    ),
    Variable(
        "DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS",
        "true",
        "HSTS covers the subdomains of the host that sends it",
        group=PRODUCTION,
    ),
    Variable(
        "DJANGO_SECURE_HSTS_PRELOAD",
        "false",
        "opt in to browsers' HSTS preload lists (the domain owner's call)",
        group=PRODUCTION,
    ),
    Variable(
        "DJANGO_SECURE_PROXY_SSL_HEADER",
        "false",
        "trust `X-Forwarded-Proto`, only behind a proxy that sets it and strips a client's own",
        group=PRODUCTION,
    ),
)

#: Shorter names of the queue servers' URLs, accepted too; the ``IMQ_`` ones win when both are set.
SHORT_URL_NAMES: tuple[str, ...] = ("REDIS_URL", "AMQP_URL", "MYSQL_URL", "POSTGRES_URL")
