"""Chart data is staff-only and comes as columns; the production settings pass
``check --deploy``; the charts' static files are vendored, not fetched."""

import json
import os
import secrets
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.staticfiles import finders
from django.template.loader import render_to_string
from django.templatetags.static import static
from django.urls import reverse

from experiments import selectors
from experiments.models import Experiment, Run, Sample
from tests.support.commands import manage

ROOT = Path(settings.BASE_DIR)


def make_run(name, *, status="running", spec=None, samples=()):
    experiment = Experiment.objects.create(name=name)
    run = Run.objects.create(experiment=experiment, status=status, spec=spec or {"events": 1000})
    for t_s, unique, p99_ms in samples:
        Sample.objects.create(
            run=run,
            t_s=t_s,
            produced=unique,
            consumed=unique,
            unique=unique,
            produce_eps=unique / t_s,
            consume_eps=unique / t_s,
            backlog=0,
            depth=None,
            p99_ms=p99_ms,
        )
    return run


def samples_url(run_id):
    return reverse("experiments:run_samples", args=[run_id])


# Samples stored out of order: the columns come back ordered by t_s.
SAMPLES = [(2.0, 600, 4.5), (1.0, 250, None), (3.0, 900, 3.25)]


@pytest.mark.django_db
def test_anonymous_and_non_staff_users_go_to_the_login_page_and_get_no_data(client, django_user_model):
    run = make_run("charts-anon", samples=SAMPLES)
    login = reverse("admin:login")

    anonymous = client.get(samples_url(run.pk))
    assert anonymous.status_code == 302 and anonymous.url.startswith(login)
    assert b"t_s" not in anonymous.content and b"600" not in anonymous.content

    client.force_login(django_user_model.objects.create_user("charts-viewer", password="x" * 12))
    not_staff = client.get(samples_url(run.pk))
    assert not_staff.status_code == 302 and not_staff.url.startswith(login)
    assert b"t_s" not in not_staff.content

    # a missing run is not told apart from an existing one before login
    assert client.get(samples_url(run.pk + 1000)).status_code == 302


@pytest.mark.django_db
def test_staff_get_the_run_and_its_samples_as_columns_ordered_by_time(admin_client):
    run = make_run("charts-staff", samples=SAMPLES)

    response = admin_client.get(samples_url(run.pk))
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    body = response.json()
    assert body["run"] == {
        "id": run.pk,
        "status": "running",
        "verdict": "",
        "events": 1000,
        "progress": 0.9,
        "error": "",
    }
    columns = body["columns"]
    assert set(columns) == set(selectors.SAMPLE_COLUMNS)
    assert columns["t_s"] == [1.0, 2.0, 3.0]
    assert columns["unique"] == [250, 600, 900]
    assert columns["p99_ms"] == [None, 4.5, 3.25]  # an interval with no latency is a gap
    assert columns["depth"] == [None, None, None]

    newer = admin_client.get(samples_url(run.pk), {"after": "2.0"}).json()["columns"]
    assert newer["t_s"] == [3.0] and newer["p99_ms"] == [3.25]
    assert admin_client.get(samples_url(run.pk), {"after": "nan"}).status_code == 400
    assert admin_client.get(samples_url(run.pk + 1000)).status_code == 404


@pytest.mark.django_db
def test_the_columns_are_one_query(django_assert_num_queries):
    run = make_run("charts-one-query", samples=SAMPLES)
    with django_assert_num_queries(1):
        columns = selectors.run_samples_columns(run_id=run.pk)
    assert len(columns["t_s"]) == 3


@pytest.mark.django_db
def test_progress_of_burst_steady_succeeded_and_queued_runs():
    burst = make_run("charts-burst", spec={"events": 2000}, samples=[(1.0, 500, 1.0)])
    steady = make_run(
        "charts-steady",
        spec={"events": 1200, "rate_eps": 100, "warmup_s": 2, "duration_s": 10},
        samples=[(3.0, 300, 1.0)],
    )
    done = make_run("charts-done", status="succeeded", spec={"events": 2000}, samples=[(1.0, 500, 1.0)])
    queued = make_run("charts-queued", status="queued", spec={"events": 2000})
    unknown = make_run("charts-nospec", spec={"backend": "memory"})
    assert selectors.run_progress(run=burst) == 0.25
    assert selectors.run_progress(run=steady) == 0.25  # 3 s of 2 + 10
    assert selectors.run_progress(run=done) == 1.0
    assert selectors.run_progress(run=queued) == 0.0
    assert selectors.run_progress(run=unknown) is None


@pytest.mark.django_db
def test_the_partial_loads_vendored_static_files_and_points_at_the_run():
    run = make_run("charts-partial", status="queued")
    html = render_to_string("experiments/_charts.html", {"run": run})
    for name in ("vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css", "experiments/charts.js"):
        assert f'"{static(name)}"' in html
        assert finders.find(name), f"{name} is not in static/"
    assert f'data-samples-url="{samples_url(run.pk)}"' in html and 'data-status="queued"' in html
    assert "//cdn" not in html and "https://" not in html  # nothing fetched from elsewhere at run time


def test_the_vendored_chart_library_names_its_version_and_license():
    notes = (ROOT / "static/vendor/README.md").read_text()
    head = (ROOT / "static/vendor/uplot/uPlot.iife.min.js").read_text()[:80]
    version = head.split("(v", 1)[1].split(")", 1)[0]
    assert f"uPlot {version}" in notes and "MIT" in notes
    assert "MIT License" in (ROOT / "static/vendor/uplot/LICENSE").read_text()


def only_django(**environ) -> dict[str, str]:
    """The environment with only the given DJANGO_* variables, for ``manage()`` in a fresh
    process (settings are read once at import, so production settings need a process of their own)."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}, **environ}


# The deploy checks that the production settings silence, each justified in
# docs/how-to/production.md: keep the two in step.
JUSTIFIED = {"security.W021"}


def test_check_deploy_with_production_settings_reports_nothing_unjustified():
    result = manage(
        only_django(
            DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secrets.token_urlsafe(48), DJANGO_ALLOWED_HOSTS="imq.example.org"
        ),
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNINGS" not in result.stdout + result.stderr
    assert f"no issues ({len(JUSTIFIED)} silenced)" in result.stdout
    shown = manage(
        only_django(
            DJANGO_DEBUG="false", DJANGO_SECRET_KEY=secrets.token_urlsafe(48), DJANGO_ALLOWED_HOSTS="imq.example.org"
        ),
        "shell",
        "-c",
        "from django.conf import settings as s; import json; print(json.dumps("
        "[s.SILENCED_SYSTEM_CHECKS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SECURE_SSL_REDIRECT,"
        " s.SECURE_HSTS_SECONDS > 0, s.DEBUG]))",
    )
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == [sorted(JUSTIFIED), True, True, True, True, False], (
        shown.stderr
    )


@pytest.mark.parametrize("key", [None, "imqueue-dev-only-not-secret"])
def test_production_refuses_to_start_without_a_secret_key_of_its_own(key):
    environ = {"DJANGO_DEBUG": "false", **({"DJANGO_SECRET_KEY": key} if key else {})}
    result = manage(only_django(**environ), "check")
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DJANGO_SECRET_KEY" in result.stderr
