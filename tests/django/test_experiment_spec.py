"""``WorkloadSpec`` is the one definition of the spec: the model, the command and
``SPEC_FIELDS`` follow it, and an experiment a run would reject cannot be saved."""

from __future__ import annotations

from dataclasses import fields

import pytest
from django.core.exceptions import ValidationError
from django.core.management import get_commands, load_command_class

from experiments.models import Experiment
from experiments.validation import SPEC_FIELDS, experiment_validate
from queues.workload.spec import WorkloadSpec


def test_the_model_has_a_field_for_every_spec_field_with_the_same_default():
    assert SPEC_FIELDS == tuple(f.name for f in fields(WorkloadSpec))
    for spec_field in fields(WorkloadSpec):
        model_field = Experiment._meta.get_field(spec_field.name)
        default = list(spec_field.default) if isinstance(spec_field.default, tuple) else spec_field.default
        assert model_field.get_default() == default, spec_field.name  # a tuple is stored as a JSON list
        assert model_field.null == (spec_field.default is None), spec_field.name


def test_the_commands_defaults_are_the_specs():
    command = load_command_class(get_commands()["runexperiment"], "runexperiment")
    parser = command.create_parser("manage.py", "runexperiment")
    spec = WorkloadSpec()
    by_dest = {action.dest: action.default for action in parser._actions}
    assert by_dest["backend"] == spec.backend
    assert by_dest["producers"] == spec.producers and by_dest["consumers"] == spec.consumers
    assert by_dest["events_per_message"] == spec.events_per_message and by_dest["batch"] == spec.batch
    assert by_dest["idle_timeout"] == spec.idle_timeout_s
    assert by_dest["warmup"] == spec.warmup_s and by_dest["arrival"] == spec.arrival


def test_repeat_is_not_listed_under_steady_flow():
    command = load_command_class(get_commands()["runexperiment"], "runexperiment")
    parser = command.create_parser("manage.py", "runexperiment")
    steady = next(g for g in parser._action_groups if g.title.startswith("steady flow"))
    assert "repeat" not in {action.dest for action in steady._group_actions}
    assert "rate" in {action.dest for action in steady._group_actions}


def errors_of(experiment: Experiment) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        experiment.full_clean()
    return caught.value.message_dict


@pytest.mark.django_db
def test_a_valid_experiment_passes_full_clean():
    experiment = Experiment(name="fine", backend="rabbitmq", options={"prefetch": 500, "confirms": "batch"})
    experiment.full_clean()
    assert experiment_validate(experiment=experiment).backend == "rabbitmq"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "changes,field,expected",
    [
        ({"backend": "rabbitmw"}, "backend", "unknown backend 'rabbitmw' (did you mean 'rabbitmq'?)"),
        ({"options": {"prefetsh": 10}}, "options", "memory-mp has no option 'prefetsh'"),
        ({"options": {"max_depth": "abc"}}, "options", "option max_depth must be a whole number"),
        ({"options": ["max_depth", 3]}, "options", "options must be an object of NAME: VALUE"),
        ({"backend": "loop", "rate_eps": 100.0}, "rate_eps", "the loop approach runs bursts only"),
        ({"backend": "loop", "options": {"prefetch": 1}}, "options", "the loop approach takes no options"),
        ({"backend": "loop", "consumers": 2}, "consumers", "runs on one thread"),
        ({"events": 10, "producers": 20}, "producers", "producers (20) must not exceed events (10)"),
        ({"batch": 200_000}, "batch", "batch must be a whole number from 1 to 100000"),
        ({"rate_eps": 0.0}, "rate_eps", "rate_eps must be a number from 0.1"),
        ({"arrival": "bursty"}, "arrival", "arrival must be one of uniform, poisson"),
    ],
)
def test_full_clean_rejects_what_a_run_would_reject_with_the_error_on_its_field(changes, field, expected):
    experiment = Experiment(name="invalid", **changes)
    errors = errors_of(experiment)
    assert field in errors, errors
    assert any(expected in message for message in errors[field]), errors


@pytest.mark.django_db
def test_the_admin_form_shows_the_error_beside_its_field(rf, admin_user):
    from django.contrib.admin.sites import site

    request = rf.post("/")
    request.user = admin_user
    form_class = site._registry[Experiment].get_form(request)
    data = {f.name: f.default for f in fields(WorkloadSpec) if f.default is not None}
    form = form_class(data={**data, "name": "admin", "options": '{"prefetch": 10}'})
    assert not form.is_valid()
    assert "memory-mp has no option 'prefetch'" in form.errors["options"][0]
    assert not Experiment.objects.filter(name="admin").exists()
    good = form_class(data={**data, "name": "admin", "options": '{"max_depth": 10}'})
    assert good.is_valid(), good.errors
