"""Comparing stored runs (ratios, the repeats' spread, the outcome classes) and exporting them as
JSON and CSV, through the functions and through ``compareruns`` / ``exportruns``."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from experiments.models import Experiment, Run, RunSeries, Sample
from experiments.reports import compare
from experiments.reports.compare import (
    CompareError,
    comparison_as_dict,
    comparison_chart_data,
    format_comparison,
    runs_compare,
)
from experiments.reports.export import CSV_HEADER, runs_export_csv, runs_export_json
from experiments.selectors import SAMPLE_COLUMNS, RunsNotFound, run_samples_columns, runs_by_ids

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment():
    return Experiment.objects.create(name="cmp-redis", backend="redis-list", events=100_000, producers=2, consumers=2)


def make_run(experiment, *, throughput_eps=10_000.0, p99_ms=12.0, lost=0, status="succeeded", series=None, samples=0):
    """A stored run as ``run_finish`` leaves it: columns, spec snapshot, summary; with samples."""
    duration_s = 100_000 / throughput_eps
    spec = {"backend": "redis-list", "events": 100_000, "producers": 2, "consumers": 2, "rate_eps": None}
    run = Run.objects.create(
        experiment=experiment,
        series=series,
        status=status,
        spec=spec,
        backend="redis-list",
        verdict="exact" if not lost else "lost",
        environment={"python": "3.12.3"},
        duration_s=duration_s,
        throughput_eps=throughput_eps,
        latency_p50_ms=p99_ms / 4,
        latency_p99_ms=p99_ms,
        unique=100_000 - lost,
        duplicates=0,
        lost=lost,
    )
    run.summary = {
        "run_id": run.pk,
        "backend": "redis-list",
        "events": 100_000,
        "verdict": run.verdict,
        "duration_s": duration_s,
        "throughput_eps": throughput_eps,
        "lost": lost,
        "latency_ms": {"p50": p99_ms / 4, "p99": p99_ms},
        "environment": run.environment,
    }
    run.save(update_fields=["summary"])
    # stored newest first, to show the read orders by t_s
    Sample.objects.bulk_create(
        [
            Sample(
                run=run,
                t_s=float(t),
                produced=t * 1000,
                consumed=t * 1000,
                unique=t * 1000,
                produce_eps=1000.0,
                consume_eps=throughput_eps - t,
                depth=50 + t,
                backlog=0,
                p50_ms=1.0,
                p90_ms=2.0,
                p99_ms=p99_ms,
                due=t * 1000,
            )
            for t in range(samples, 0, -1)
        ]
    )
    return run


def repeat_series(experiment, throughputs, *, failed=0):
    """A repeat series with one succeeded run per throughput, plus ``failed`` failed runs whose
    figures are far off (they must not widen the spread)."""
    series = RunSeries.objects.create(experiment=experiment, kind=RunSeries.Kind.REPEAT, status="succeeded")
    runs = [make_run(experiment, throughput_eps=t, series=series) for t in throughputs]
    runs += [
        make_run(experiment, throughput_eps=10.0, p99_ms=9_000.0, status="failed", series=series) for _ in range(failed)
    ]
    return runs


def cells(comparison, run):
    return next(col for col in comparison.runs if col.run_id == run.pk).cells


def test_without_repeats_a_difference_gets_its_ratio_but_is_never_called_better(experiment):
    base = make_run(experiment, throughput_eps=10_000.0, p99_ms=20.0)
    other = make_run(experiment, throughput_eps=12_000.0, p99_ms=10.0)
    c = runs_compare(runs=[base, other])
    assert c.baseline_id == base.pk  # the first run by default
    tp, p99, lost = (cells(c, other)[k] for k in ("throughput_eps", "latency_p99_ms", "lost"))
    assert tp.ratio == pytest.approx(1.2) and tp.outcome == compare.NO_SPREAD and tp.spread is None
    assert p99.ratio == pytest.approx(0.5) and p99.outcome == compare.NO_SPREAD
    assert lost.ratio is None and lost.outcome == compare.SAME  # 0 and 0: no ratio, but equal
    assert cells(c, base)["throughput_eps"].outcome == compare.BASELINE
    assert cells(c, other)["backend"].value == "redis-list" and cells(c, other)["events"].ratio == 1.0


def test_a_difference_within_the_repeats_spread_is_not_a_win(experiment):
    in_series = repeat_series(experiment, [9_000.0, 10_000.0, 11_000.0], failed=1)
    near, far = make_run(experiment, throughput_eps=11_500.0), make_run(experiment, throughput_eps=13_000.0)
    slow = make_run(experiment, throughput_eps=7_500.0, p99_ms=30.0)
    c = runs_compare(runs=[in_series[1], near, far, slow])
    base = cells(c, in_series[1])["throughput_eps"]
    assert base.spread == (9_000.0, 11_000.0)  # the failed run's 10 events/s is left out
    assert cells(c, near)["throughput_eps"].outcome == compare.WITHIN_SPREAD  # 1,500 <= 2,000
    assert cells(c, far)["throughput_eps"].outcome == compare.BETTER
    assert cells(c, slow)["throughput_eps"].outcome == compare.WORSE
    assert cells(c, far)["throughput_eps"].spread is None  # far is in no series
    # lower is better for latency; the series' p99 is 12 ms in every succeeded run (width 0)
    assert cells(c, far)["latency_p99_ms"].outcome == compare.SAME
    assert cells(c, slow)["latency_p99_ms"].outcome == compare.WORSE


def test_the_wider_spread_of_the_two_runs_decides(experiment):
    narrow = repeat_series(experiment, [10_000.0, 10_100.0])
    wide = repeat_series(experiment, [8_000.0, 10_500.0, 12_000.0])
    c = runs_compare(runs=[narrow[0], wide[1]])
    other = cells(c, wide[1])["throughput_eps"]
    assert other.spread == (8_000.0, 12_000.0) and other.outcome == compare.WITHIN_SPREAD  # 500 <= 4,000
    assert other.ratio == pytest.approx(1.05)


def test_a_series_with_one_succeeded_run_gives_no_spread(experiment):
    lone = repeat_series(experiment, [10_000.0], failed=2)
    c = runs_compare(runs=[lone[0], make_run(experiment, throughput_eps=10_050.0)])
    assert cells(c, lone[0])["throughput_eps"].spread is None
    assert cells(c, lone[0])["throughput_eps"].outcome == compare.BASELINE


def test_a_chosen_baseline_inverts_the_ratios(experiment):
    a, b = make_run(experiment, throughput_eps=10_000.0), make_run(experiment, throughput_eps=20_000.0)
    c = runs_compare(runs=[a, b], baseline_id=b.pk)
    assert c.baseline_id == b.pk and [col.is_baseline for col in c.runs] == [False, True]
    assert cells(c, a)["throughput_eps"].ratio == pytest.approx(0.5)
    assert cells(c, a)["duration_s"].ratio == pytest.approx(2.0)


def test_a_failed_run_without_figures_has_no_ratio_and_no_outcome(experiment):
    ok, failed = make_run(experiment), make_run(experiment, status="failed")
    Run.objects.filter(pk=failed.pk).update(throughput_eps=None, latency_p99_ms=None, verdict="")
    c = runs_compare(runs=runs_by_ids(ids=[ok.pk, failed.pk]))
    tp = cells(c, failed)["throughput_eps"]
    assert (tp.value, tp.ratio, tp.outcome) == (None, None, compare.NO_VALUE)
    assert cells(c, failed)["status"].value == "failed"


@pytest.mark.parametrize("case", ["one run", "twice", "foreign baseline"])
def test_a_comparison_that_cannot_be_made_is_refused_with_why(experiment, case):
    a, b = make_run(experiment), make_run(experiment)
    runs, baseline, why = {
        "one run": ([a], None, "at least two runs"),
        "twice": ([a, a, b], None, "once"),
        "foreign baseline": ([a, b], b.pk + 1000, f"baseline {b.pk + 1000} is not among"),
    }[case]
    with pytest.raises(CompareError, match=why):
        runs_compare(runs=runs, baseline_id=baseline)
    assert issubclass(CompareError, ValueError)


def test_runs_by_ids_keeps_the_order_and_names_every_missing_id(experiment):
    a, b = make_run(experiment), make_run(experiment)
    assert [r.pk for r in runs_by_ids(ids=[b.pk, a.pk])] == [b.pk, a.pk]
    missing = [b.pk + 500, b.pk + 501]
    with pytest.raises(RunsNotFound) as caught:
        runs_by_ids(ids=[a.pk, *missing])
    assert caught.value.missing == missing and f"{b.pk + 500}, {b.pk + 501}" in str(caught.value)


def test_samples_come_back_as_columns_ordered_by_time(experiment, django_assert_num_queries):
    run = make_run(experiment, samples=4)
    with django_assert_num_queries(1):
        columns = run_samples_columns(run_id=run.pk)
    assert list(columns) == list(SAMPLE_COLUMNS)
    assert columns["t_s"] == [1.0, 2.0, 3.0, 4.0] and columns["depth"] == [51, 52, 53, 54]
    assert columns["offered_eps"] == [None] * 4
    assert run_samples_columns(run_id=make_run(experiment).pk) == {name: [] for name in SAMPLE_COLUMNS}


def test_chart_data_has_one_series_per_run_for_each_figure(experiment):
    a, b = make_run(experiment, samples=3), make_run(experiment, throughput_eps=5_000.0, samples=2)
    data = comparison_chart_data(runs=[a, b])
    assert set(data) == {"throughput", "p99", "depth"} and data["p99"]["unit"] == "ms"
    series = data["throughput"]["series"]
    assert [s["run_id"] for s in series] == [a.pk, b.pk]
    assert series[1]["t_s"] == [1.0, 2.0] and series[1]["values"] == [4_999.0, 4_998.0]
    assert json.loads(json.dumps(data)) == data


def test_the_table_and_the_dict_say_the_same(experiment):
    series = repeat_series(experiment, [9_000.0, 11_000.0])
    other = make_run(experiment, throughput_eps=10_500.0)
    c = runs_compare(runs=[series[0], other])
    table = format_comparison(c)
    assert f"run {series[0].pk} (baseline)" in table and "[9,000-11,000]" in table
    assert "x1.17 within spread" in table  # 10,500 / 9,000
    as_dict = json.loads(json.dumps(comparison_as_dict(c)))
    tp = as_dict["runs"][1]["figures"]["throughput_eps"]
    assert tp["outcome"] == "within spread" and tp["spread"] is None
    assert as_dict["runs"][0]["figures"]["throughput_eps"]["spread"] == {"min": 9_000.0, "max": 11_000.0}


def test_json_export_round_trips_with_the_summary_and_samples(experiment):
    a, b = make_run(experiment, samples=3), make_run(experiment, status="failed")
    Run.objects.filter(pk=b.pk).update(summary={}, error="redis: connection refused")
    items = json.loads(runs_export_json(runs=runs_by_ids(ids=[a.pk, b.pk])))
    assert [item["run_id"] for item in items] == [a.pk, b.pk]
    assert len(items[0]["samples"]) == 3 and items[0]["samples"][0]["t_s"] == 1.0
    assert set(items[0]["samples"][0]) == set(SAMPLE_COLUMNS)
    assert items[0]["status"] == "succeeded" and items[0]["error"] is None and items[0]["latency_ms"]["p99"] == 12.0
    assert items[1] == {
        "run_id": b.pk,
        "backend": "redis-list",
        "schema_version": 1,
        "environment": {"python": "3.12.3"},
        "status": "failed",
        "error": "redis: connection refused",
        "samples": [],
    }


def test_csv_export_has_a_row_per_sample_and_one_for_a_run_without_samples(experiment):
    a, b = make_run(experiment, samples=3), make_run(experiment)
    rows = list(csv.reader(io.StringIO(runs_export_csv(runs=[a, b]))))
    assert tuple(rows[0]) == CSV_HEADER and rows[0][:3] == ["run_id", "experiment", "backend"]
    assert len(rows) == 1 + 3 + 1
    assert [r[0] for r in rows[1:]] == [str(a.pk)] * 3 + [str(b.pk)]
    t_s = CSV_HEADER.index("t_s")
    assert [r[t_s] for r in rows[1:4]] == ["1.0", "2.0", "3.0"]
    assert rows[4][t_s:] == [""] * len(SAMPLE_COLUMNS) and rows[4][1] == "cmp-redis"


def test_compareruns_prints_the_table_or_one_json_object(experiment):
    a, b = make_run(experiment), make_run(experiment, throughput_eps=15_000.0)
    out = io.StringIO()
    call_command("compareruns", str(a.pk), str(b.pk), "--baseline", str(b.pk), stdout=out)
    assert f"run {b.pk} (baseline)" in out.getvalue() and "x0.67 no spread known" in out.getvalue()
    out = io.StringIO()
    call_command("compareruns", str(a.pk), str(b.pk), "--json", stdout=out)
    assert json.loads(out.getvalue())["baseline_id"] == a.pk


def test_compareruns_turns_bad_ids_and_baselines_into_command_errors(experiment):
    a, b = make_run(experiment), make_run(experiment)
    with pytest.raises(CommandError, match=f"no run with id {b.pk + 99}.*stored runs"):
        call_command("compareruns", str(a.pk), str(b.pk + 99))
    with pytest.raises(CommandError, match="not among"):
        call_command("compareruns", str(a.pk), str(b.pk), "--baseline", str(b.pk + 99))
    with pytest.raises(CommandError, match="at least two"):
        call_command("compareruns", str(a.pk))


def test_exportruns_writes_csv_to_stdout_and_json_to_a_file(experiment, tmp_path):
    a = make_run(experiment, samples=2)
    out = io.StringIO()
    call_command("exportruns", str(a.pk), "--format", "csv", stdout=out)
    assert len(list(csv.reader(io.StringIO(out.getvalue())))) == 3
    target = tmp_path / "runs.json"
    call_command("exportruns", str(a.pk), "--format", "json", "--output", str(target))
    assert len(json.loads(target.read_text())[0]["samples"]) == 2
    with pytest.raises(CommandError, match=f"no run with id {a.pk + 7}"):
        call_command("exportruns", str(a.pk + 7), "--format", "json")
