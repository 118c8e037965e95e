"""Steady flow: the open-loop schedule, the keep-up verdict, stalls, the saturation search."""

import uuid

import numpy as np
import pytest

from queues.backends.memory import MultiprocessBackend
from queues.faults.injectors import PauseProducer
from queues.measurement.saturation import find_max_rate
from queues.measurement.spread import spread
from queues.run.result import RunStatus
from queues.run.runner import Runner
from queues.workload import schedule as schedule_module
from queues.workload.schedule import Schedule
from queues.workload.spec import WorkloadSpec


def steady(rate, duration, *, warmup=0.0, backend=None, interval=1.0, faults=None, **fields):
    spec = WorkloadSpec(backend="memory-mp", rate_eps=rate, duration_s=duration, warmup_s=warmup, **fields)
    runner = Runner(
        spec, backend or MultiprocessBackend(), run_id=uuid.uuid4().hex[:8], sample_interval_s=interval, faults=faults
    )
    result = runner.run()
    assert result.status == RunStatus.SUCCEEDED, result.error
    return result


def test_a_steady_run_sends_rate_times_window_events():
    spec = WorkloadSpec(rate_eps=250, duration_s=3, warmup_s=1, producers=2)
    assert spec.events == 1000 and spec.steady
    assert sum(count for _, count in spec.producer_shares()) == 1000


def test_uniform_schedule_fixes_intended_times_in_advance():
    spec = WorkloadSpec(rate_eps=1000, duration_s=1, producers=2)
    first, second = Schedule(spec, 0), Schedule(spec, 1)
    # each producer sends 500/s: one event every 2 ms, the second half an interval later
    assert first.offsets(0, 3).tolist() == [0, 2_000_000, 4_000_000]
    assert second.offsets(0, 2).tolist() == [1_000_000, 3_000_000]
    assert first.due(0) == 1 and first.due(3_999_999) == 2 and first.due(10**12) == 500


def test_poisson_schedule_has_the_offered_mean_rate_and_is_reproducible():
    spec = WorkloadSpec(rate_eps=10_000, duration_s=2, arrival="poisson")
    offsets = Schedule(spec, 0).offsets(0, spec.events)
    assert np.all(np.diff(offsets) >= 0)
    assert offsets[-1] / 1e9 == pytest.approx(2.0, rel=0.05)
    assert np.array_equal(offsets, Schedule(spec, 0).offsets(0, spec.events))
    gaps = np.diff(offsets)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.1)  # exponential gaps


def whole_schedule(spec: WorkloadSpec, producer: int) -> np.ndarray:
    """Every offset of ``producer`` computed at once, as the schedule did before it was chunked."""
    count, rate = spec.producer_shares()[producer][1], spec.rate_eps / spec.producers
    if spec.arrival == "poisson":
        rng = np.random.default_rng([spec.seed, producer])
        return np.cumsum(rng.exponential(1e9 / rate, count)).astype(np.int64)
    return ((np.arange(count) + producer / spec.producers) * (1e9 / rate)).astype(np.int64)


@pytest.mark.parametrize("arrival", ["uniform", "poisson"])
def test_a_schedule_made_in_chunks_equals_the_whole_array(arrival, monkeypatch):
    monkeypatch.setattr(schedule_module, "CHUNK_EVENTS", 1_000)  # a few dozen chunks, reused from a cache of two
    spec = WorkloadSpec(rate_eps=3_000, duration_s=2.5, producers=3, arrival=arrival, seed=5)
    for producer in range(spec.producers):
        whole = whole_schedule(spec, producer)
        assert np.array_equal(Schedule(spec, producer).offsets(0, len(whole)), whole)
        schedule = Schedule(spec, producer)  # asked piecemeal, forwards and back, as a sender would and more
        for k in [*range(0, len(whole), 333), 5, 2_400, 0]:
            assert np.array_equal(schedule.offsets(k, 1_500), whole[k : k + 1_500])
            assert schedule.offset_ns(k) == whole[k]
        times = [-1, 0, *whole[::37].tolist(), *(whole[::41] - 1).tolist(), int(whole[-1]) + 1, 10**12]
        for elapsed_ns in times:
            assert schedule.due(elapsed_ns) == int(np.searchsorted(whole, elapsed_ns, side="right"))


def test_a_schedule_holds_chunks_not_the_run():
    spec = WorkloadSpec(rate_eps=1_000_000, duration_s=1_000, arrival="poisson")  # 1e9 events
    schedule = Schedule(spec, 0)
    assert schedule.due(10**9) == pytest.approx(1_000_000, rel=0.01)
    assert schedule.offsets(999_000, 1_000).size == 1_000
    held = sum(chunk.nbytes for chunk in schedule._offsets._cache.values())
    assert held <= schedule_module.CACHED_CHUNKS * schedule_module.CHUNK_EVENTS * 8


def test_a_steady_run_follows_the_schedule_and_reports_the_steady_figures():
    result = steady(2_000, 2.0, warmup=0.5, interval=0.5)
    s = result.summary
    assert s["verdict"] == "exact" and s["events"] == 5_000 and s["sum"] == 5_000 * 5_001 // 2
    # never ahead of the schedule; behind it by no more than a loaded machine could be (the
    # exact rate, and whether it kept up to 1%, are figures for bench/, not assertions)
    assert 2_000 / 2 <= s["send_eps"] <= 2_000
    assert 2_000 / 2 <= s["consume_eps"] <= 2_000 * 1.25
    assert isinstance(s["kept_up"], bool) and isinstance(s["warnings"], list)
    assert s["latency_ms"]["p99"] < 1_000  # far from the stall of the test below
    assert set(s["send_delay_ms"]) == {"p50", "p99", "max"}
    assert s["latency_from_send_ms"]["p50"] <= s["latency_ms"]["p50"]
    samples = result.samples
    assert samples[0].offered_eps == 2_000 and samples[0].latency_ms is not None
    assert samples[0].due == pytest.approx(samples[0].t_s * 2_000, abs=20)  # events due by then at 2,000/s
    assert samples[0].send_delay_p99_ms is not None
    assert all(isinstance(x.depth, int) for x in samples)


@pytest.mark.parametrize("arrival", ["uniform", "poisson"])
def test_producers_and_consumers_on_time_get_no_warning_and_kept_up(arrival):
    result = steady(2_000, 2.0, warmup=0.3, interval=0.5, arrival=arrival)
    s = result.summary
    assert s["warnings"] == [] and s["kept_up"] is True, s
    # judged against the realised schedule, which a Poisson one makes differ from rate x duration
    assert abs(s["rate_error"]) < 0.01 and s["consume_eps"] <= s["send_eps"]
    assert s["worst_interval_send_ratio"] is not None and s["backlog_at_window_end"] <= 2_000


def test_samples_hold_to_one_definition_of_backlog_never_negative():
    result = steady(2_000, 1.5, interval=0.2, backend=MultiprocessBackend(consume_cost_us=300))
    for sample in result.samples:
        assert sample.due is not None and sample.backlog == max(0, sample.due - sample.unique) >= 0
        assert sample.produced <= sample.due  # never ahead of the schedule
    assert result.samples[-1].due == 3_000


def test_a_stalled_producer_is_flagged_although_it_caught_up():
    # producer 0 SIGSTOPped for 1 s half a second in; it then sends what was due in a rush
    result = steady(2_000, 3.0, interval=0.25, faults=[PauseProducer(pause_s=1.0, after_events=1_000)])
    s = result.summary
    assert s["verdict"] == "exact"
    assert s["send_delay_ms"]["p99"] >= 500
    assert s["worst_interval_send_ratio"] < 0.5  # at least one interval sent (nearly) nothing
    assert any("did not follow the schedule" in w for w in s["warnings"]), s["warnings"]


def test_a_producer_sending_one_message_a_call_keeps_a_rate_above_one_call_a_tick():
    # one call per 0.5 ms tick capped this at about 1,500 events/s; a producer that is behind
    # now sends call after call until it is caught up
    result = steady(5_000, 2.0, batch=1, interval=0.5)
    s = result.summary
    assert s["verdict"] == "exact"
    assert s["send_eps"] >= 3_500, s  # the loose bound a loaded machine still meets


def test_a_consumer_slower_than_the_offer_is_reported_as_not_keeping_up():
    backend = MultiprocessBackend(consume_cost_us=1000)  # capacity: 1000 events/s
    result = steady(2_000, 1.5, backend=backend, idle_timeout_s=5)
    s = result.summary
    assert s["kept_up"] is False
    assert s["consume_eps"] < 0.99 * 2_000
    assert s["backlog_at_window_end"] > 0
    assert s["drain_s"] > 0.5  # what was left when the producers stopped took time to drain
    assert s["verdict"] == "exact"


def test_a_stall_shows_in_p99_where_a_closed_loop_measure_hides_it():
    # the queue holds at most 20 messages, so the producer is held back while the consumer
    # is paused for 1 s: a closed-loop measure (from the actual send) sees almost nothing
    backend = MultiprocessBackend(stall_after=1_000, stall_s=1.0, max_depth=20)
    result = steady(1_000, 3.0, backend=backend)
    s = result.summary
    assert s["latency_ms"]["max"] >= 900  # from the intended time: the stall is there
    assert s["latency_ms"]["p99"] >= 800
    assert s["latency_from_send_ms"]["p99"] < 500  # from the send: hidden
    assert s["send_delay_ms"]["max"] >= 900  # the producer knows it sent late


def test_the_saturation_search_bisects_to_the_knee_within_the_tolerance():
    """The search itself, on a queue whose knee is known exactly (no runs, no timing)."""
    knee = 2_000

    def step(rate):
        kept_up = rate <= knee
        return {
            "rate_eps": rate,
            "send_eps": rate,
            "kept_up": kept_up,
            "latency_ms": {"p99": 5.0 if kept_up else 900.0},
        }

    best, curve = find_max_rate(step, slo_p99_ms=100, start_rate_eps=600, tolerance=0.05)
    assert 0.95 * knee <= best <= knee
    assert [p.rate_eps for p in curve] == sorted(p.rate_eps for p in curve)
    assert all(p.ok == (p.rate_eps <= knee) for p in curve)
    # a start above the knee searches downwards
    best, _ = find_max_rate(step, slo_p99_ms=100, start_rate_eps=10_000, tolerance=0.05)
    assert 0.95 * knee <= best <= knee


def test_the_saturation_search_never_passes_a_rate_the_consumer_cannot_take():
    capacity = 2_000  # consume_cost_us=500: a hard ceiling, whatever the machine's load

    def step(rate):
        spec = WorkloadSpec(backend="memory-mp", rate_eps=rate, duration_s=1.0, warmup_s=0.3, idle_timeout_s=5)
        backend = MultiprocessBackend(consume_cost_us=1e6 / capacity)
        return Runner(spec, backend, run_id=uuid.uuid4().hex[:8]).run().summary

    best, curve = find_max_rate(step, slo_p99_ms=100, start_rate_eps=600, tolerance=0.25)
    # a loaded machine can make a step fail below the capacity, never pass above it
    assert best is None or best <= 1.1 * capacity
    assert not any(p.ok for p in curve if p.rate_eps > 1.1 * capacity)
    assert any(not p.ok for p in curve)
    assert all(p.p99_ms is not None for p in curve)


def test_spread_gives_median_min_and_max_of_numeric_figures():
    runs = [
        {"run_id": 1, "duration_s": 1.0, "verdict": "exact", "latency_ms": {"p99": 5.0}, "kept_up": True},
        {"run_id": 2, "duration_s": 3.0, "verdict": "exact", "latency_ms": {"p99": 1.0}, "kept_up": False},
        {"run_id": 3, "duration_s": 2.0, "verdict": "lost", "latency_ms": {"p99": 2.0}, "kept_up": True},
    ]
    result = spread(runs)
    assert result["median"] == {"duration_s": 2.0, "latency_ms": {"p99": 2.0}}
    assert result["min"]["duration_s"] == 1.0 and result["max"]["latency_ms"]["p99"] == 5.0
