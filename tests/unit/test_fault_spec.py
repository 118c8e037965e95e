"""Faults as part of the spec: ``KIND@T[:ARG]`` parsed, normalised and checked against the run."""

import pytest

from queues.backends.memory import MemoryBackend, MultiprocessBackend
from queues.errors import InvalidSpec, NotSupported
from queues.faults.injectors import check_faults
from queues.workload.faults import FaultSpec, fault_parse
from queues.workload.spec import WorkloadSpec

STEADY = {"rate_eps": 1000, "duration_s": 10, "consumers": 2}


@pytest.mark.parametrize(
    ("text", "parsed", "canonical"),
    [
        ("kill-consumer@3", FaultSpec("kill-consumer", 3.0), "kill-consumer@3"),
        ("kill-producer@2.5:0", FaultSpec("kill-producer", 2.5), "kill-producer@2.5"),
        ("kill-consumer@1:1", FaultSpec("kill-consumer", 1.0, target=1), "kill-consumer@1:1"),
        ("pause-consumer@2:1.5", FaultSpec("pause-consumer", 2.0, duration_s=1.5), "pause-consumer@2:1.5"),
        ("pause-consumer@2:1:1", FaultSpec("pause-consumer", 2.0, duration_s=1.0, target=1), "pause-consumer@2:1:1"),
        ("cut-connections@4", FaultSpec("cut-connections", 4.0), "cut-connections@4"),
        (
            "restart-server@4:aof-always",
            FaultSpec("restart-server", 4.0, persistence="aof-always"),
            "restart-server@4:aof-always",
        ),
        ("poison@1", FaultSpec("poison", 1.0, count=1), "poison@1:1"),
        ("poison@1:25", FaultSpec("poison", 1.0, count=25), "poison@1:25"),
    ],
)
def test_a_fault_text_parses_to_its_spec_and_back(text, parsed, canonical):
    assert fault_parse(text) == parsed
    assert parsed.text() == canonical and fault_parse(canonical) == parsed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("explode@3", "unknown fault kind 'explode'"),
        ("kill-consumer", "is not KIND@T"),
        ("kill-consumer@x", "is not KIND@T"),
        ("kill-consumer@1:one", "'one' is not a whole number"),
        ("pause-consumer@1", "needs its pause in seconds"),
        ("pause-consumer@1:0", "must be over 0"),
        ("poison@1:0", "N must be from 1"),
        ("cut-connections@1:2", "takes no argument"),
        ("kill-consumer@1:0:0", "one argument too many"),
    ],
)
def test_a_bad_fault_text_says_what_is_allowed(text, says):
    with pytest.raises(InvalidSpec, match=says) as caught:
        fault_parse(text)
    assert caught.value.field == "faults"


def test_the_spec_stores_canonical_texts_from_a_list_or_one_text():
    from_list = WorkloadSpec(**STEADY, faults=["kill-consumer@1:0", "poison@2"])
    from_text = WorkloadSpec(**STEADY, faults="kill-consumer@1, poison@2")
    assert from_list.faults == from_text.faults == ("kill-consumer@1", "poison@2:1")
    assert [f.kind for f in from_list.fault_specs] == ["kill-consumer", "poison"]
    assert WorkloadSpec.from_mapping({**from_list.as_dict(), "faults": list(from_list.faults)}) == from_list


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"events": 100}, "needs a steady run"),
        ({**STEADY, "warmup_s": 1}, None),
        ({**STEADY}, "at or after the run's end at 10 s"),
        ({**STEADY, "faults": ["kill-consumer@1:2"]}, "targets consumer 2, but the run starts 2 consumer"),
        ({**STEADY, "faults": ["kill-producer@1:1"]}, "targets producer 1, but the run starts 1 producer"),
    ],
)
def test_a_fault_the_run_cannot_take_is_refused_before_it_starts(fields, says):
    fields = {"faults": ["kill-consumer@10"], **fields} if "faults" not in fields else fields
    if says is None:  # 10 s into a run of 1 s warm-up + 10 s: within it
        assert WorkloadSpec(**fields).faults == ("kill-consumer@10",)
        return
    with pytest.raises(InvalidSpec, match=says):
        WorkloadSpec(**fields)


def test_a_fault_the_backend_cannot_take_is_refused_in_one_line():
    spec = WorkloadSpec(**STEADY, backend="memory", faults=["kill-consumer@1", "cut-connections@2"])
    with pytest.raises(NotSupported, match=r"^fault kill-consumer@1: memory runs its workers as threads"):
        check_faults(spec.fault_specs, MemoryBackend())
    with pytest.raises(
        NotSupported,
        match=r"^fault cut-connections@2: memory-mp cannot take it: there is no server whose connections could be cut",
    ):
        check_faults(spec.fault_specs[1:], MultiprocessBackend())
