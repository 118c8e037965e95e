"""The whole stack in docker/, checked without a Docker engine (none runs on these machines):
the compose file against the compose specification and against the docs' table of services
and ports (docs/how-to/docker.md), the Prometheus configuration with ``promtool``, the Grafana provisioning and
dashboard against what /metrics really exposes, and the Dockerfile's instructions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import promtool

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMMAND = "docker compose -f docker/compose.yaml up -d"
#: The docs page that tells how to run the stack, with its table of services and ports.
DOCS_PAGE = ROOT / "docs" / "how-to" / "docker.md"

#: Exporter metrics the dashboard may use, with where each is defined (checked by hand in the
#: sources of the versions compose.yaml pins): no exporter runs here to ask.
RABBITMQ_EXPORTER = "rabbitmq_prometheus (RabbitMQ 3.13), prometheus_rabbitmq_core_metrics_collector.erl"
EXPORTER_METRICS = {
    "up": "Prometheus itself, one per scrape target",
    "rabbitmq_queue_messages_ready": RABBITMQ_EXPORTER,
    "rabbitmq_queue_messages_unacked": RABBITMQ_EXPORTER,
    "redis_commands_processed_total": "redis_exporter v1.66.0, exporter/exporter.go (metricMapCounters)",
    "pg_stat_database_xact_commit": "postgres_exporter v0.16.0, collector/pg_stat_database.go",
}
#: Grafana's variables, replaced by a value of the same kind so that promtool can parse the query.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((DOCKER / "grafana" / "dashboards" / "imqueue.json").read_text())


# -- compose.yaml ------------------------------------------------------------------------------


def test_the_compose_file_validates_against_the_compose_specification():
    checked = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(DOCKER / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_image_is_pinned_and_every_mounted_file_exists(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).is_file(), name
            continue
        tag = image.rsplit(":", 1)[1] if ":" in image.split("/")[-1] else ""
        assert re.match(r"v?\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DOCKER / source).exists(), f"{name} mounts {source}, which is missing"


def test_the_stack_starts_in_order(compose):
    services = compose["services"]
    for name in ("web", "qcluster"):
        needs = services[name]["depends_on"]
        assert needs["migrate"] == {"condition": "service_completed_successfully"}
        for server in ("postgres", "mariadb", "redis", "rabbitmq"):
            assert needs[server] == {"condition": "service_healthy"}, (name, server)
    for name in ("postgres", "mariadb", "redis", "rabbitmq", "web", "qcluster", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]
    assert services["prometheus"]["depends_on"]["web"] == {"condition": "service_healthy"}
    assert services["grafana"]["depends_on"]["prometheus"] == {"condition": "service_healthy"}


def test_qcluster_scales_and_serves_its_metrics_from_its_own_folder(compose):
    qcluster = compose["services"]["qcluster"]
    # `--scale qcluster=N` fails on a fixed container name or host port
    assert "container_name" not in qcluster and "ports" not in qcluster
    assert "metrics_serve" in qcluster["command"][-1] and "qcluster" in qcluster["command"][-1]
    # SIGTERM to the cluster's main process only (init forwards it), time to cancel a run
    assert qcluster["init"] is True and qcluster["stop_grace_period"] == "60s"
    assert "metrics_reset" in compose["services"]["web"]["command"][-1]
    # a metrics folder is never shared between containers: it stays inside each one (/tmp)
    for name in ("web", "qcluster"):
        env = compose["services"][name]["environment"]
        assert env["IMQ_METRICS_DIR"].startswith("/tmp/")
        assert not any(
            v.split(":")[-1].startswith(env["IMQ_METRICS_DIR"]) for v in compose["services"][name].get("volumes", [])
        )


def test_rabbitmq_enables_its_management_and_prometheus_plugins(compose):
    rabbitmq = compose["services"]["rabbitmq"]
    assert rabbitmq["image"].endswith("-management")
    assert "./rabbitmq/enabled_plugins:/etc/rabbitmq/enabled_plugins:ro" in rabbitmq["volumes"]
    plugins = (DOCKER / "rabbitmq" / "enabled_plugins").read_text().strip()
    assert re.fullmatch(r"\[([a-z_]+)(,[a-z_]+)*\]\.", plugins), plugins  # an Erlang list term
    assert {"rabbitmq_management", "rabbitmq_prometheus"} <= set(plugins[1:-2].split(","))


# -- the docs page agrees with compose.yaml ---------------------------------------------------


def documented_services(page: str) -> dict[str, dict[str, set[str] | str]]:
    """The page's table: service -> its image, host addresses and addresses in the stack."""
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    services = {}
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        name, image, host, inside = (re.findall(r"`([^`]+)`", cell) for cell in cells[:4])
        services[name[0]] = {"image": image[0], "host": set(host), "inside": set(inside)}
    return services


def compose_addresses(name: str, service: dict) -> tuple[set[str], set[str]]:
    """A service's published addresses (host side) and its addresses on the stack's network."""
    host, inside = set(), {f"{name}:{port}" for port in service.get("expose", [])}
    for mapping in service.get("ports", []):
        address, port, container_port = mapping.rsplit(":", 2)
        host.add(f"{address}:{port}")
        inside.add(f"{name}:{container_port}")
    return host, inside


def test_the_docs_name_the_services_and_ports_of_the_compose_file(compose):
    section = DOCS_PAGE.read_text()
    assert COMMAND in section and "--scale qcluster=" in section
    documented = documented_services(section)
    assert set(documented) == set(compose["services"])
    for name, service in compose["services"].items():
        host, inside = compose_addresses(name, service)
        assert documented[name]["image"] == service["image"], name
        assert documented[name]["host"] == host, name
        assert documented[name]["inside"] == inside, name
        # only loopback: the stack's pages are not offered to the network
        assert all(address.startswith("127.0.0.1:") for address in host), name


# -- prometheus.yml ----------------------------------------------------------------------------


def test_promtool_accepts_the_prometheus_configuration():
    checked = subprocess.run(
        [promtool(), "check", "config", str(DOCKER / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_prometheus_scrapes_services_of_the_stack_on_their_ports(compose):
    config = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    inside = set().union(*(compose_addresses(n, s)[1] for n, s in compose["services"].items()))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for job in jobs.values() for static in job.get("static_configs", []) for t in static["targets"]}
    assert targets - {"localhost:9090"} <= inside
    assert {"web:8000", "rabbitmq:15692", "redis-exporter:9121", "postgres-exporter:9187"} <= targets
    # every qcluster replica, found by the service's DNS name (one address per replica)
    (replicas,) = jobs["qcluster"]["dns_sd_configs"]
    assert replicas["type"] == "A" and f"{replicas['names'][0]}:{replicas['port']}" == "qcluster:9108"
    assert compose["services"]["qcluster"]["environment"]["IMQ_CLUSTER_METRICS_PORT"] == "9108"


# -- Grafana -----------------------------------------------------------------------------------


def test_grafana_provisions_the_data_source_and_the_dashboard(compose, dashboard):
    provisioning = DOCKER / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "imqueue.yaml").read_text())["providers"]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"] if v.startswith("./"))
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    uids = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel.get("targets", [])}
    assert uids == {source["uid"]}


def panel_queries(dashboard: dict) -> dict[str, str]:
    return {
        f"{panel['title']} {target['refId']}": target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    }


def concrete(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL query selects (promql-parser's AST: every vector selector)."""
    names = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next(m.value for m in node.matchers.matchers if m.name == "__name__")
            names.add(name)

    promql_parser.walk(promql_parser.parse(concrete(expr)), visit)
    return names


def exposition(folder: Path) -> str:
    """What /metrics serves after one run's interval and its end, written and scraped the way the
    product does it (experiments.prometheus.metrics in a process of its own, django-prometheus's view)."""
    program = textwrap.dedent("""
        import django
        django.setup()
        from django.test import Client
        from experiments.prometheus import metrics
        from queues.measurement.histograms import LATENCY_BUCKETS_US, IntervalSample
        buckets = [0] * (len(LATENCY_BUCKETS_US) + 1)
        buckets[3] = 5
        sample = IntervalSample(t_s=1.0, produced=5, consumed=5, unique=5, produce_eps=5.0, consume_eps=5.0, depth=0,
                        backlog=0, latency_ms=None, offered_eps=5.0, latency_buckets=buckets, latency_sum_us=4000)
        metrics.sample_observe(run_id=1, backend="memory", sample=sample)
        metrics.run_ended(run_id=1, backend="memory", status="succeeded", duplicates=0, lost=0)
        print(Client().get("/metrics").content.decode())
    """)
    env = dict(
        os.environ,
        IMQ_METRICS_DIR=str(folder),
        DATABASE_URL=f"sqlite:///{folder / 'db.sqlite3'}",
        DJANGO_SETTINGS_MODULE="imqueue_site.settings",
        PYTHONPATH=str(ROOT),
    )
    out = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_every_dashboard_query_uses_only_metrics_that_are_exposed(dashboard, tmp_path):
    exposed = {s.name for family in text_string_to_metric_families(exposition(tmp_path)) for s in family.samples}
    assert {"imqueue_latency_seconds_bucket", "imqueue_events_consumed_total", "imqueue_queue_depth"} <= exposed
    queries = panel_queries(dashboard)
    used = set()
    for where, expr in queries.items():
        names = metric_names(expr)
        assert names, f"{where}: {expr} selects no metric"
        unknown = {n for n in names if n not in exposed and n not in EXPORTER_METRICS}
        assert not unknown, f"{where}: {expr} uses {unknown}, which /metrics does not expose"
        used |= names
    # the classic graphs are there
    assert {
        "imqueue_events_consumed_total",
        "imqueue_latency_seconds_bucket",
        "imqueue_queue_depth",
        "imqueue_lost_total",
        "imqueue_duplicates_total",
    } <= used


def test_promtool_parses_every_dashboard_query(dashboard, tmp_path):
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"imqueue:panel_{i}", "expr": concrete(expr)}
                    for i, expr in enumerate(panel_queries(dashboard).values())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical, current = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        keyword, _, args = current.strip().partition(" ")
        logical.append((keyword.upper(), args.strip()))
        current = ""
    return logical


def test_the_dockerfile_installs_from_pyproject_and_runs_as_a_user(compose):
    steps = dockerfile_instructions(DOCKER / "Dockerfile")
    assert steps[0][0] == "FROM" and re.fullmatch(r"python:3\.1[1-9]\.\d+-slim(-\w+)?", steps[0][1]), steps[0]
    runs = [args for keyword, args in steps if keyword == "RUN"]
    copies = [args.split()[:-1] for keyword, args in steps if keyword == "COPY"]
    assert ["pyproject.toml"] in copies  # the dependencies' layer, rebuilt only when it changes
    assert all((ROOT / source).exists() for sources in copies for source in sources)
    assert any("pyproject.toml" in run and "pip install" in run for run in runs)
    assert any("pip install --no-deps -e ." in run for run in runs)
    assert any("manage.py collectstatic --noinput" in run for run in runs)
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users and users[-1] not in {"root", "0"}
    last_run_as_root = max(i for i, (keyword, _) in enumerate(steps) if keyword == "RUN")
    assert last_run_as_root < max(i for i, (keyword, _) in enumerate(steps) if keyword == "USER")
    (cmd,) = [json.loads(args) for keyword, args in steps if keyword == "CMD"]
    assert cmd[0] == "daphne" and cmd[-1] == "imqueue_site.asgi:application"
    assert compose["services"]["web"]["build"]["dockerfile"] == "docker/Dockerfile"
    # BuildKit reads the ignore file that sits beside the Dockerfile: no venv, database or .git
    ignored = (DOCKER / "Dockerfile.dockerignore").read_text().split()
    assert {".git", ".venv", "*.sqlite3", "docker/.env"} <= set(ignored)
