"""runexperiment's steady-flow options: --rate, --repeat, --find-max, and their errors."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from experiments.models import Run, RunSeries

STEADY_KEYS = {
    "rate_eps",
    "send_eps",
    "consume_eps",
    "kept_up",
    "send_delay_ms",
    "drain_s",
    "latency_from_send_ms",
    "latency_ms",
}


@pytest.mark.django_db
def test_rate_adds_the_steady_figures_to_the_json(capsys):
    call_command("runexperiment", "--rate", "1000", "--duration", "1", "--warmup", "0.5", "--json")
    summary = json.loads(capsys.readouterr().out)
    assert STEADY_KEYS <= set(summary)
    assert summary["events"] == 1500 and summary["verdict"] == "exact"
    assert set(summary["send_delay_ms"]) == {"p50", "p99", "max"}
    assert 1000 / 2 <= summary["send_eps"] <= 1000  # never ahead of the schedule; a loaded machine lags
    run = Run.objects.get(pk=summary["run_id"])
    assert run.spec["rate_eps"] == 1000 and run.samples.filter(offered_eps=1000).exists()


@pytest.mark.django_db
def test_repeat_prints_runs_with_median_and_spread_and_stores_the_series(capsys):
    call_command("runexperiment", "--events", "2000", "--repeat", "3", "--json", "--experiment", "rep")
    result = json.loads(capsys.readouterr().out)
    assert len(result["runs"]) == 3 and {"median", "min", "max"} <= set(result)
    assert result["min"]["duration_s"] <= result["median"]["duration_s"] <= result["max"]["duration_s"]
    assert set(result["median"]["latency_ms"]) == {"p50", "p90", "p99", "p999", "max"}
    series = RunSeries.objects.get(pk=result["series_id"])
    assert series.runs.count() == 3 and series.result["median"] == result["median"]


@pytest.mark.django_db
def test_find_max_prints_the_curve_and_stores_each_step_as_a_run_of_the_series(capsys):
    call_command(
        "runexperiment",
        "--find-max",
        "--slo-p99-ms",
        "100",
        "--rate",
        "400",
        "--duration",
        "1",
        "--option",
        "consume_cost_us=1250",
        "--json",
    )
    result = json.loads(capsys.readouterr().out)
    # the consumer's capacity is 800/s: a loaded machine can lower what passes, never raise it
    assert all(p["rate_eps"] <= 880 for p in result["curve"] if p["ok"])
    assert result["max_rate_eps"] == max((p["rate_eps"] for p in result["curve"] if p["ok"]), default=None)
    assert result["slo_p99_ms"] == 100 and result["status"] == "succeeded"
    curve = result["curve"]
    assert {"rate_eps", "p99_ms", "kept_up", "ok", "run_id"} <= set(curve[0])
    assert [p["rate_eps"] for p in curve] == sorted(p["rate_eps"] for p in curve)
    series = RunSeries.objects.get(pk=result["series_id"])
    assert series.kind == "find-max" and series.status == "succeeded" and series.result == result
    steps = {run.pk: run for run in series.runs.all()}
    assert sorted(steps) == sorted(p["run_id"] for p in curve)
    for point in curve:
        step = steps[point["run_id"]]
        assert step.status == "succeeded" and step.spec["rate_eps"] == point["rate_eps"]
        assert step.summary["verdict"] == "exact" and step.summary["latency_ms"]["p99"] == point["p99_ms"]
        assert step.samples.exists() and step.samples.last().consumed == step.spec["events"]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "args,message",
    [
        (["--rate", "100", "--events", "10"], "--events and --rate exclude each other"),
        (["--rate", "0"], "rate_eps must be a number from 0.1"),
        (["--rate", "fast"], "rate_eps must be a number"),
        (["--rate", "100", "--duration", "-1"], "duration_s must be a number"),
        (["--rate", "100", "--arrival", "bursty"], "arrival must be one of uniform, poisson"),
        (["--find-max"], "--find-max needs --slo-p99-ms"),
        (["--repeat", "0"], "--repeat must be a whole number"),
    ],
)
def test_bad_steady_input_is_refused_before_anything_is_stored(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        call_command("runexperiment", *args)
    assert not Run.objects.exists()
