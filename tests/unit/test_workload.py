import pytest

from queues.errors import InvalidSpec
from queues.workload.spec import WorkloadSpec


@pytest.mark.parametrize(
    "field,value",
    [
        ("events", 0),
        ("events", -5),
        ("events", "1.5"),
        ("events", "abc"),
        ("events", 2.5),
        ("events", True),
        ("consumers", 0),
        ("producers", "-1"),
        ("batch", 0),
        ("events_per_message", ""),
    ],
)
def test_invalid_values_say_what_is_allowed(field, value):
    with pytest.raises(InvalidSpec) as err:
        WorkloadSpec(**{field: value})
    message = str(err.value)
    assert message.startswith(f"{field} must be a whole number from 1 to ")
    assert repr(value) in message


def test_numbers_may_be_written_as_text_or_in_e_notation():
    spec = WorkloadSpec(events="1e6", producers="2", batch="1_000")
    assert (spec.events, spec.producers, spec.batch) == (1_000_000, 2, 1000)


def test_more_producers_than_events_is_refused():
    with pytest.raises(InvalidSpec, match="every producer sends at least one event"):
        WorkloadSpec(events=2, producers=3)


def test_unknown_parameters_are_named():
    with pytest.raises(InvalidSpec, match="unknown parameter"):
        WorkloadSpec.from_mapping({"evnts": 5})


def test_shares_cover_1_to_n_exactly_once():
    spec = WorkloadSpec(events=10, producers=3)
    shares = spec.producer_shares()
    assert shares == [(0, 4), (4, 3), (7, 3)]
    values = [base + seq + 1 for base, count in shares for seq in range(count)]
    assert values == list(range(1, 11))
    assert spec.expected_sum == 55
