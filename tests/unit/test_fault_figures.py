"""What a fault's outcome is judged by: the time to recover and the declared guarantee."""

import pytest

from queues.measurement.histograms import IntervalSample
from queues.measurement.summary import guarantee_contradictions, recovery_s


def samples(rates, offered=1000.0, offered_until=None):
    """One sample a second with these consume rates; the schedule offers ``offered`` until
    ``offered_until`` seconds (all of them by default)."""
    out = []
    for i, rate in enumerate(rates, start=1):
        on = offered_until is None or i <= offered_until
        out.append(
            IntervalSample(
                t_s=float(i),
                produced=0,
                consumed=0,
                unique=0,
                produce_eps=0,
                consume_eps=rate,
                depth=None,
                backlog=0,
                latency_ms=None,
                offered_eps=offered if on else 0.0,
            )
        )
    return out


def test_recovery_is_the_start_of_the_first_3_s_back_within_10_percent():
    # fault at 2.5 s: the 2-3 interval is disturbed, 3-4 still catching up (+50%), then steady from 4 s
    run = samples([1000, 1000, 400, 1500, 1050, 980, 1000, 1000])
    assert recovery_s(run, fault_s=2.5, offered_eps=1000) == 1.5


def test_a_dip_restarts_the_stretch_and_a_run_that_never_recovers_says_none():
    assert recovery_s(samples([1000, 0, 1000, 1000, 0, 1000, 1000, 1000]), fault_s=1.0, offered_eps=1000) == 4.0
    assert recovery_s(samples([1000, 0, 1000, 1000]), fault_s=1.0, offered_eps=1000) is None
    # the schedule ends before 3 s of recovery: not recovered within the run
    assert recovery_s(samples([1000, 0, 1000, 1000, 0, 0], offered_until=4), fault_s=1.0, offered_eps=1000) is None


@pytest.mark.parametrize(
    ("outcome", "found"),
    [
        ({"guarantee": "at-least-once", "lost": 0, "duplicates": 40, "resend_bound": 0, "redelivery_causes": 1}, []),
        (
            {"guarantee": "at-least-once", "lost": 3, "duplicates": 0, "resend_bound": 0, "redelivery_causes": 1},
            ["declares at-least-once, but 3 event(s) were lost"],
        ),
        (
            {
                "guarantee": "at-least-once",
                "lost": 3,
                "duplicates": 0,
                "resend_bound": 0,
                "redelivery_causes": 1,
                "loss_explained": True,
            },
            [],
        ),
        (
            {"guarantee": "at-least-once", "lost": 0, "duplicates": 5, "resend_bound": 0, "redelivery_causes": 0},
            ["without a redelivery"],
        ),
        ({"guarantee": "at-least-once", "lost": 0, "duplicates": 5, "resend_bound": 100, "redelivery_causes": 0}, []),
        ({"guarantee": "at-most-once", "lost": 9, "duplicates": 0, "resend_bound": 0, "redelivery_causes": 1}, []),
        (
            {"guarantee": "at-most-once", "lost": 0, "duplicates": 2, "resend_bound": 0, "redelivery_causes": 1},
            ["declares at-most-once, but the queue delivered 2 event(s) twice"],
        ),
    ],
)
def test_an_outcome_that_contradicts_the_declared_guarantee_is_named(outcome, found):
    contradictions = guarantee_contradictions(**outcome)
    assert len(contradictions) == len(found)
    for text, expected in zip(contradictions, found, strict=True):
        assert expected in text
