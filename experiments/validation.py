"""A spec checked as a run would check it, before anything is stored: the one place the
admin's forms, ``Experiment.clean()``, the commands and the services validate a workload.

The bottom of the app: it imports ``queues`` and Django's ``ValidationError`` only, never the
models (an ``Experiment`` is read through its attributes), so the models can call it.
No I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError

from queues.backends import backend_class
from queues.distributed.plan import plan_shares
from queues.errors import InvalidSpec, NotSupported, QueueError, UnknownBackend
from queues.faults.injectors import check_faults
from queues.run.approaches import validate as approach_validate
from queues.run.launch import build_backend, check_alias, resolve_options
from queues.workload.spec import WorkloadSpec

if TYPE_CHECKING:
    from experiments.models import Experiment

#: The spec's fields, each a field of ``Experiment`` too: ``WorkloadSpec`` is their one definition.
SPEC_FIELDS = tuple(f.name for f in fields(WorkloadSpec))


def spec_validate(*, values: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> WorkloadSpec:
    """A valid spec for ``values`` whose backend exists and takes ``options``, or
    ``InvalidSpec``/``UnknownBackend`` with a message that says what is allowed. No I/O."""
    spec = WorkloadSpec.from_mapping(values)
    options_validate(backend=spec.backend, options=options)
    if check_alias(spec.backend) == "approach":
        if spec.faults:
            raise InvalidSpec(
                f"the {spec.backend} approach runs in one process and takes no faults: choose a queue backend",
                field="faults",
            )
        approach_validate(spec)
    elif spec.faults:
        try:  # what the backend can take (a process to signal, a server): no I/O
            check_faults(spec.fault_specs, build_backend(spec.backend, options=options))
        except NotSupported as exc:
            raise InvalidSpec(str(exc), field="faults") from None
    return spec


def options_validate(*, backend: str, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every option of ``backend`` with ``options`` applied, defaults filled in (what the run
    will record). Raises ``InvalidSpec`` for an unknown name or a value not allowed."""
    if options is not None and not isinstance(options, Mapping):
        raise InvalidSpec(f"options must be an object of NAME: VALUE, got {options!r}", field="options")
    return resolve_options(backend, options)


def placement_validate(*, spec: WorkloadSpec, placement: Mapping[str, Any]) -> None:
    """Raises ``InvalidSpec`` (field ``placement``) for a placement the run cannot take: counts
    that do not add up to the spec's, or a backend whose queue is not on a server that every
    host reaches (the in-memory ones, the in-process approaches)."""
    if check_alias(spec.backend) != "backend" or not backend_class(spec.backend).default_url:
        raise InvalidSpec(
            f"{spec.backend} keeps its queue in one machine's memory: a run placed on load hosts "
            "needs a backend with a server",
            field="placement",
        )
    plan_shares(spec, placement)


def experiment_validate(*, experiment: Experiment) -> WorkloadSpec:
    """``experiment``'s spec, validated as a run would validate it. Raises Django's
    ``ValidationError`` keyed by the field at fault where the error names one (for forms)."""
    try:
        spec = spec_validate(values={f: getattr(experiment, f) for f in SPEC_FIELDS}, options=experiment.options)
        if experiment.placement:
            placement_validate(spec=spec, placement=experiment.placement)
        return spec
    except UnknownBackend as exc:
        raise ValidationError({"backend": str(exc)}) from None
    except InvalidSpec as exc:
        if exc.field in (*SPEC_FIELDS, "options", "placement"):
            raise ValidationError({exc.field: str(exc)}) from None
        raise ValidationError(str(exc)) from None
    except QueueError as exc:  # a backend whose driver is not installed
        raise ValidationError({"backend": str(exc)}) from None
