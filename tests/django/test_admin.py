"""The admin control room through the test client: pages and actions as a staff user, refusals
for anonymous and non-staff users, validation messages, wrong-state actions, and the run list's
query count. No cluster runs here: launched runs stay queued with their django-q2 task stored."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.contrib.admin import helpers
from django.urls import reverse
from django_q.models import OrmQ

from experiments.execution.tasks import stale_runs_task
from experiments.models import Experiment, Run, RunSeries, Sample
from tests.support.rows import stored_spec

pytestmark = pytest.mark.django_db

CHANGELIST = {m: reverse(f"admin:experiments_{m}_changelist") for m in ("experiment", "run", "runseries")}


def url(name, *args):
    return reverse(f"admin:experiments_{name}", args=args)


def make_experiment(name, **fields):
    return Experiment.objects.create(name=name, **{"backend": "memory", "events": 1000, **fields})


def make_run(experiment, *, status="succeeded", throughput_eps=10_000.0, p99_ms=8.0, series=None, samples=0):
    spec = stored_spec(experiment.backend)
    finished = status in ("succeeded", "failed")
    run = Run.objects.create(
        experiment=experiment,
        series=series,
        status=status,
        backend=experiment.backend,
        spec=spec,
        environment={"python": "3.12-secret-env-marker"},
        verdict="exact" if finished else "",
        throughput_eps=throughput_eps if finished else None,
        latency_p50_ms=p99_ms / 4 if finished else None,
        latency_p99_ms=p99_ms if finished else None,
        duration_s=0.1 if finished else None,
        lost=0 if finished else None,
        duplicates=0 if finished else None,
        unique=1000 if finished else None,
    )
    if finished:
        run.summary = {
            "run_id": run.pk,
            "backend": experiment.backend,
            "events": 1000,
            "verdict": "exact",
            "throughput_eps": throughput_eps,
            "duration_s": 0.1,
            "unique": 1000,
            "lost": 0,
            "duplicates": 0,
            "latency_ms": {"p50": p99_ms / 4, "p90": p99_ms / 2, "p99": p99_ms},
        }
        run.save(update_fields=["summary"])
    Sample.objects.bulk_create(
        [
            Sample(
                run=run,
                t_s=float(t),
                produced=t,
                consumed=t,
                unique=t,
                produce_eps=1.0,
                consume_eps=throughput_eps,
                depth=t,
                backlog=0,
                p99_ms=p99_ms,
            )
            for t in range(1, samples + 1)
        ]
    )
    return run


def action(client, changelist, name, objs, **extra):
    data = {"action": name, helpers.ACTION_CHECKBOX_NAME: [str(o.pk) for o in objs], "index": "0", **extra}
    return client.post(changelist, data, follow=True)


def texts(response):
    return [str(m) for m in response.context["messages"]]


def form_data(experiment_name="form-exp", **changes):
    data = {
        "name": experiment_name,
        "backend": "memory",
        "events": 1000,
        "producers": 1,
        "consumers": 1,
        "events_per_message": 1,
        "batch": 100,
        "idle_timeout_s": 10.0,
        "rate_eps": "",
        "duration_s": 10.0,
        "warmup_s": 0.0,
        "arrival": "uniform",
        "seed": 1,
        "faults": "",
        "replace_after_s": 1.0,
        "options": "{}",
        "notes": "",
    }
    return {**data, **changes}


# -- security ------------------------------------------------------------------------------------


def every_page(run, series, experiment, other):
    return [
        CHANGELIST["experiment"],
        url("experiment_change", experiment.pk),
        CHANGELIST["run"],
        url("run_change", run.pk),
        CHANGELIST["runseries"],
        url("runseries_change", series.pk),
        f"{url('run_compare')}?ids={run.pk},{other.pk}",
        f"{url('run_export')}?ids={run.pk}&format=json",
        f"{url('run_export')}?ids={run.pk}&format=csv",
    ]


def test_anonymous_and_non_staff_get_the_login_page_and_no_data(client, django_user_model):
    experiment = make_experiment("sec-exp-marker")
    series = RunSeries.objects.create(experiment=experiment, kind="repeat")
    run, other = make_run(experiment, series=series, samples=3), make_run(experiment)
    login = reverse("admin:login")
    for who in ("anonymous", "not staff"):
        if who == "not staff":
            client.force_login(django_user_model.objects.create_user("viewer", password="x" * 12))
        for page in every_page(run, series, experiment, other):
            response = client.get(page)
            assert response.status_code == 302 and response.url.startswith(login), (who, page)
            assert b"sec-exp-marker" not in response.content and b"secret-env-marker" not in response.content
        refused = client.post(url("run_cancel", run.pk))
        assert refused.status_code == 302 and refused.url.startswith(login)
    assert Run.objects.get(pk=run.pk).status == "succeeded"


def test_object_tools_refuse_get(admin_client):
    run = make_run(make_experiment("get-exp"), status="queued")
    assert admin_client.get(url("run_cancel", run.pk)).status_code == 405
    assert Run.objects.get(pk=run.pk).status == "queued"


# -- the experiment form -------------------------------------------------------------------------


def test_experiment_form_lists_backends_with_guarantees_and_the_chosen_backends_options(admin_client):
    page = admin_client.get(reverse("admin:experiments_experiment_add")).content.decode()
    assert "redis-list: at-least-once" in page and "memory: " in page
    assert "max_backlog_mb" in page  # the default backend's options in the options' help
    experiment = make_experiment("opts-exp", backend="rabbitmq")
    page = admin_client.get(url("experiment_change", experiment.pk)).content.decode()
    assert "prefetch" in page and "queue_type" in page


@pytest.mark.parametrize(
    "changes, field, words",
    [
        ({"producers": 0}, "producers", "producers"),
        ({"backend": "rabbitmq", "options": '{"prefech": 10}'}, "options", "did you mean 'prefetch'"),
        ({"backend": "rabbitmq", "options": '{"prefetch": -5}'}, "options", "prefetch must be"),
        ({"faults": "kill-consumer@3"}, "faults", "needs a steady run: set rate_eps"),
        ({"rate_eps": 100, "faults": "explode@3"}, "faults", "unknown fault kind 'explode'"),
        ({"rate_eps": 100, "faults": "kill-consumer@3"}, "faults", "memory runs its workers as threads"),
        ({"rate_eps": 100, "backend": "memory-mp", "faults": "restart-server@3"}, "faults", "memory-mp"),
    ],
)
def test_experiment_form_shows_the_error_next_to_its_field(admin_client, changes, field, words):
    response = admin_client.post(reverse("admin:experiments_experiment_add"), form_data(**changes))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors and words in " ".join(errors[field]), errors
    assert not Experiment.objects.filter(name="form-exp").exists()


def test_experiment_form_saves_a_valid_definition(admin_client):
    response = admin_client.post(
        reverse("admin:experiments_experiment_add"), form_data(backend="rabbitmq", options='{"prefetch": 50}')
    )
    assert response.status_code == 302
    assert Experiment.objects.get(name="form-exp").options == {"prefetch": 50}


def test_experiment_form_takes_faults_one_a_line_and_shows_them_back(admin_client):
    data = form_data(backend="redis-list", rate_eps=500, faults="kill-consumer@2\r\ncut-connections@3, poison@4:5")
    assert admin_client.post(reverse("admin:experiments_experiment_add"), data).status_code == 302
    experiment = Experiment.objects.get(name="form-exp")
    assert experiment.faults == ["kill-consumer@2", "cut-connections@3", "poison@4:5"]
    page = admin_client.get(url("experiment_change", experiment.pk)).content.decode()
    assert "kill-consumer@2\ncut-connections@3\npoison@4:5</textarea>" in page


# -- experiment actions --------------------------------------------------------------------------


def test_launch_asks_for_k_first_then_queues_k_runs_as_a_series(admin_client, django_capture_on_commit_callbacks):
    experiment = make_experiment("launch-exp")
    page = action(admin_client, CHANGELIST["experiment"], "launch", [experiment])
    assert b'name="repeat"' in page.content and not Run.objects.filter(experiment=experiment).exists()
    tasks_before = OrmQ.objects.count()
    with django_capture_on_commit_callbacks(execute=True):
        response = action(admin_client, CHANGELIST["experiment"], "launch", [experiment], apply="1", repeat="3")
    runs = Run.objects.filter(experiment=experiment)
    assert [r.status for r in runs] == ["queued"] * 3
    series = RunSeries.objects.get(experiment=experiment)
    assert series.kind == "repeat" and {r.series_id for r in runs} == {series.pk}
    assert OrmQ.objects.count() - tasks_before == 3
    assert any("3 runs queued" in m for m in texts(response))


def test_launch_of_one_run_has_no_series_and_an_invalid_experiment_is_refused(
    admin_client, django_capture_on_commit_callbacks
):
    good = make_experiment("launch-one")
    bad = make_experiment("launch-bad", options={"nope": 1})  # saved around the form's validation
    with django_capture_on_commit_callbacks(execute=True):
        response = action(admin_client, CHANGELIST["experiment"], "launch", [good, bad], apply="1", repeat="1")
    assert Run.objects.get(experiment=good).series_id is None
    assert not Run.objects.filter(experiment=bad).exists()
    messages = texts(response)
    assert any("launch-bad not launched" in m and "nope" in m for m in messages)


def test_clone_copies_the_definition_without_runs(admin_client):
    experiment = make_experiment("clone-exp", producers=3, options={"max_backlog_mb": 64})
    make_run(experiment)
    response = action(admin_client, CHANGELIST["experiment"], "clone", [experiment])
    copy = Experiment.objects.get(name="clone-exp (copy)")
    assert copy.producers == 3 and copy.options == {"max_backlog_mb": 64} and not copy.runs.exists()
    assert any("Cloned clone-exp" in m for m in texts(response))


def test_sweep_with_a_bad_value_shows_why_and_stores_nothing(admin_client):
    experiment = make_experiment("sweep-bad")
    page = action(admin_client, CHANGELIST["experiment"], "sweep", [experiment])
    assert b"consumers" in page.content and b"1, 2, 4, 8" in page.content
    response = action(
        admin_client, CHANGELIST["experiment"], "sweep", [experiment], apply="1", knob="producers", values="1, 0"
    )
    assert b"producers = 0" in response.content
    assert not RunSeries.objects.filter(experiment=experiment).exists() and not experiment.runs.exists()


def test_sweep_launches_one_run_per_value_and_shows_its_series(admin_client, django_capture_on_commit_callbacks):
    experiment = make_experiment("sweep-good")
    with django_capture_on_commit_callbacks(execute=True):
        response = action(
            admin_client, CHANGELIST["experiment"], "sweep", [experiment], apply="1", knob="consumers", values="1, 2"
        )
    series = RunSeries.objects.get(experiment=experiment)
    assert series.kind == "sweep" and series.values == [1, 2]
    assert sorted(r.spec["consumers"] for r in series.runs.all()) == [1, 2]
    assert response.redirect_chain[-1][0] == url("runseries_change", series.pk)
    assert b"Points" in response.content


def test_sweep_of_two_experiments_is_refused(admin_client):
    a, b = make_experiment("sweep-a"), make_experiment("sweep-b")
    response = action(admin_client, CHANGELIST["experiment"], "sweep", [a, b])
    assert any("select exactly one" in m for m in texts(response)) and not Run.objects.exists()


# -- run actions ---------------------------------------------------------------------------------


def test_cancel_a_queued_run_and_a_finished_one(admin_client):
    experiment = make_experiment("cancel-exp")
    queued, finished = make_run(experiment, status="queued"), make_run(experiment)
    response = action(admin_client, CHANGELIST["run"], "cancel", [queued, finished])
    assert Run.objects.get(pk=queued.pk).status == "cancelled"
    after = Run.objects.get(pk=finished.pk)
    assert after.status == "succeeded" and after.finished_at == finished.finished_at and after.error == ""
    levels = {str(m): m.level_tag for m in response.context["messages"]}
    assert levels[f"run {queued.pk} cancelled: it will not start"] == "success"
    assert any(level == "warning" and "nothing changed" in text for text, level in levels.items())


def test_cancel_and_rerun_from_the_run_page(admin_client, django_capture_on_commit_callbacks):
    experiment = make_experiment("tools-exp")
    queued = make_run(experiment, status="queued")
    page = admin_client.get(url("run_change", queued.pk)).content.decode()
    assert url("run_cancel", queued.pk) in page and "csrfmiddlewaretoken" in page
    admin_client.post(url("run_cancel", queued.pk))
    assert Run.objects.get(pk=queued.pk).status == "cancelled"
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url("run_rerun", queued.pk), follow=True)
    new = Run.objects.exclude(pk=queued.pk).get(experiment=experiment)
    assert new.status == "queued" and new.spec == queued.spec
    assert response.redirect_chain[-1][0] == url("run_change", new.pk)


def test_rerun_action_uses_the_runs_own_spec(admin_client, django_capture_on_commit_callbacks):
    experiment = make_experiment("rerun-exp")
    run = make_run(experiment)
    Experiment.objects.filter(pk=experiment.pk).update(producers=4)  # edited after the run
    with django_capture_on_commit_callbacks(execute=True):
        response = action(admin_client, CHANGELIST["run"], "rerun", [run])
    new = Run.objects.exclude(pk=run.pk).get(experiment=experiment)
    assert new.spec["producers"] == 1 and any(f"run {new.pk}" in m for m in texts(response))


def test_compare_redirects_to_a_page_with_ratios_and_the_baseline_picker(admin_client):
    experiment = make_experiment("cmp-exp")
    slow, fast = make_run(experiment, throughput_eps=1000.0, samples=3), make_run(experiment, throughput_eps=2000.0)
    response = action(admin_client, CHANGELIST["run"], "compare", [slow, fast])
    # the order the rows were ticked in (the page's order): the first is the baseline
    assert response.redirect_chain[-1][0] == f"{url('run_compare')}?ids={slow.pk},{fast.pk}"
    page = admin_client.get(f"{url('run_compare')}?ids={slow.pk},{fast.pk}").content.decode()
    assert "x2.00" in page and "no spread known" in page and 'name="baseline"' in page
    assert "imq-compare-data" in page and "imqOverlayCharts" in page
    page = admin_client.get(f"{url('run_compare')}?ids={slow.pk},{fast.pk}&baseline={fast.pk}").content.decode()
    assert "x0.50" in page
    assert f"run {fast.pk}</a> (baseline)" in page


def test_compare_of_one_run_says_why(admin_client):
    run = make_run(make_experiment("cmp-one"))
    response = action(admin_client, CHANGELIST["run"], "compare", [run])
    assert any("at least two runs" in m for m in texts(response))
    response = admin_client.get(f"{url('run_compare')}?ids={run.pk},999999", follow=True)
    assert any("no run with id 999999" in m for m in texts(response))


def test_export_actions_download_csv_and_json_with_samples(admin_client):
    experiment = make_experiment("export-exp")
    run = make_run(experiment, samples=4)
    csv_response = admin_client.post(
        CHANGELIST["run"], {"action": "export_csv", helpers.ACTION_CHECKBOX_NAME: [run.pk], "index": "0"}
    )
    assert csv_response["Content-Type"].startswith("text/csv") and "attachment" in csv_response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(b"".join(csv_response.streaming_content).decode())))
    assert [float(r["t_s"]) for r in rows] == [1.0, 2.0, 3.0, 4.0] and {r["run_id"] for r in rows} == {str(run.pk)}
    json_response = admin_client.post(
        CHANGELIST["run"], {"action": "export_json", helpers.ACTION_CHECKBOX_NAME: [run.pk], "index": "0"}
    )
    [item] = json.loads(b"".join(json_response.streaming_content))
    assert item["run_id"] == run.pk and item["verdict"] == "exact" and len(item["samples"]) == 4


def test_run_list_of_50_runs_with_samples_takes_a_fixed_number_of_queries(admin_client, django_assert_max_num_queries):
    experiments = [make_experiment(f"list-exp-{i}") for i in range(5)]
    for i in range(50):
        make_run(experiments[i % 5], samples=20)
    with django_assert_max_num_queries(12) as captured:  # 12 with 5 runs too: none per row
        response = admin_client.get(CHANGELIST["run"])
    [page_query] = [
        q["sql"] for q in captured.captured_queries if 'INNER JOIN "experiments_experiment"' in q["sql"]
    ]  # the rows
    assert '"experiments_run"."summary"' not in page_query and '"experiments_run"."spec"' not in page_query
    assert not any("experiments_sample" in q["sql"] for q in captured.captured_queries)
    assert response.status_code == 200 and response.context["cl"].result_count == 50
    assert "Events/s" in response.content.decode()


def test_run_page_with_3600_samples_draws_charts_not_a_table(admin_client):
    run = make_run(make_experiment("long-exp"), samples=3600)
    response = admin_client.get(url("run_change", run.pk))
    page = response.content.decode()
    assert response.status_code == 200
    assert f'id="imq-charts-{run.pk}"' in page and "samples.json" in page
    assert "sample-row" not in page and "inline-group" not in page and page.count("<tr") < 60
    assert (
        "latency p99" in page and "&quot;python&quot;: &quot;3.12-secret-env-marker&quot;" in page
    )  # summary table, pretty env
    assert url("run_cancel", run.pk) not in page  # a finished run has no cancel button


def test_stale_running_run_shows_failed_on_the_list(admin_client):
    from datetime import timedelta

    from django.utils import timezone

    run = make_run(make_experiment("stale-exp"), status="running")
    Run.objects.filter(pk=run.pk).update(
        started_at=timezone.now() - timedelta(hours=1), heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    stale_runs_task()  # what the cluster's schedule does every minute: the page itself only reads
    page = admin_client.get(CHANGELIST["run"]).content.decode()
    assert Run.objects.get(pk=run.pk).status == "failed" and '<td class="field-status">Failed</td>' in page


# -- series --------------------------------------------------------------------------------------


def test_sweep_series_page_plots_the_figures_against_the_knob(admin_client):
    experiment = make_experiment("series-sweep")
    series = RunSeries.objects.create(
        experiment=experiment, kind="sweep", knob="consumers", values=[1, 2], status="succeeded"
    )
    runs = [make_run(experiment, series=series, throughput_eps=t) for t in (1000.0, 1900.0)]
    series.result = {
        "points": [
            {
                "value": v,
                "run_id": r.pk,
                "status": "succeeded",
                "verdict": "exact",
                "throughput_eps": r.throughput_eps,
                "p99_ms": 8.0,
            }
            for v, r in zip([1, 2], runs, strict=True)
        ]
    }
    series.save()
    page = admin_client.get(url("runseries_change", series.pk)).content.decode()
    assert "imqXYChart" in page and "events/s and p99 against consumers" in page
    assert url("run_change", runs[1].pk) in page and "1,900" in page


def test_repeat_series_page_shows_median_and_spread(admin_client):
    experiment = make_experiment("series-repeat")
    series = RunSeries.objects.create(
        experiment=experiment,
        kind="repeat",
        status="succeeded",
        result={
            "median": {"throughput_eps": 1500.0},
            "min": {"throughput_eps": 1000.0},
            "max": {"throughput_eps": 2000.0},
        },
    )
    page = admin_client.get(url("runseries_change", series.pk)).content.decode()
    assert "Median and spread" in page and "1,500" in page and "2,000" in page


def test_cancel_series_action(admin_client):
    experiment = make_experiment("series-cancel")
    running = RunSeries.objects.create(experiment=experiment, kind="repeat")
    queued = make_run(experiment, status="queued", series=running)
    done = RunSeries.objects.create(experiment=experiment, kind="repeat", status="succeeded")
    response = action(admin_client, CHANGELIST["runseries"], "cancel_series", [running, done])
    assert RunSeries.objects.get(pk=running.pk).status == "cancelled"
    assert Run.objects.get(pk=queued.pk).status == "cancelled"
    assert RunSeries.objects.get(pk=done.pk).status == "succeeded"
    assert any("succeeded" in m and "nothing changed" in m for m in texts(response))
