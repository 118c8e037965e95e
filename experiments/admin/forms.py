"""Forms of the admin control room. Validation stays in one place: ``Experiment.clean()`` (which
calls ``services.experiment_validate``, the path ``runexperiment`` takes); these forms only
offer the choices and explain them."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.conf import settings
from django.core.cache import cache
from django.utils.html import format_html, format_html_join

from experiments.models import Experiment
from experiments.services.backend_status import backend_statuses
from experiments.services.launches import MAX_REPEAT, sweep_knobs
from queues.workload.faults import FAULT_KINDS

#: ``backend_statuses`` connects to every server; a form shown often must not probe each time.
STATUS_CACHE_S = 15
STATUS_CACHE_KEY = "imq-backend-statuses"


def backend_statuses_cached() -> list[dict[str, Any]]:
    """``backend_statuses`` as probed at most ``STATUS_CACHE_S`` seconds ago."""
    return cache.get_or_set(STATUS_CACHE_KEY, lambda: backend_statuses(urls=settings.IMQ_URLS), STATUS_CACHE_S)


def backend_label(status: dict[str, Any]) -> str:
    """``redis-list: at-least-once (acks, durable, fifo), server reachable``."""
    if status["kind"] == "approach":
        return f"{status['alias']}: in-process approach, {status['description']}"
    flags = ", ".join(name for name, on in status["capabilities"].items() if on)
    guarantee = f"{status['guarantee']} ({flags})" if status["guarantee"] else "guarantees unknown"
    state = {
        "reachable": "server answers now",
        "unreachable": "server does not answer now",
        "ready": "in process, ready",
    }.get(status["state"], f"{status['state']}: {status['detail']}")
    return f"{status['alias']}: {guarantee}; {state}"


def options_help(status: dict[str, Any] | None) -> str:
    """The declared options of one backend as an HTML list (name, type, default, allowed)."""
    if status is None or not status["options"]:
        return "A JSON object of NAME: VALUE. This backend declares no options: leave it {}."
    items = format_html_join(
        "",
        "<li><code>{}</code> ({}, default <code>{}</code>): {}. {}</li>",
        ((o["name"], o["type"], o["default"], o["allowed"], o["help"]) for o in status["options"]),
    )
    return format_html(
        'A JSON object of NAME: VALUE, e.g. <code>{{"{}": {}}}</code>. Options of <b>{}</b> '
        "(save with another backend to see its own):<ul>{}</ul>",
        status["options"][0]["name"],
        json.dumps(status["options"][0]["default"]),
        status["alias"],
        items,
    )


class FaultsField(forms.CharField):
    """The experiment's faults as text, one ``KIND@T[:ARG]`` a line (or separated by commas),
    stored as a list; ``Experiment.clean`` parses and checks them as a run would."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 60, "placeholder": "kill-consumer@3\ncut-connections@5"})

    def prepare_value(self, value: Any) -> str:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return value
        return "\n".join(value or [])

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value) or ""
        return [part for part in text.replace(",", "\n").split() if part]


def faults_help() -> str:
    items = format_html_join(
        "", "<li><code>{}</code>: {}</li>", (usage.split("  ", 1) for usage in FAULT_KINDS.values())
    )
    return format_html("One fault a line, at T seconds into a steady run:<ul>{}</ul>", items)


class ExperimentForm(forms.ModelForm):
    """The backend as a choice list from the registry, labelled with what each guarantees and
    whether its server answers now; the options' help lists the chosen backend's options."""

    faults = FaultsField(required=False, help_text=faults_help(), label="faults")

    class Meta:
        model = Experiment
        fields = "__all__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        statuses = backend_statuses_cached()
        choices = [(s["alias"], backend_label(s)) for s in statuses]
        current = self.instance.backend or self.fields["backend"].initial
        if current and current not in {alias for alias, _ in choices}:
            choices.insert(0, (current, f"{current}: not a registered backend"))  # shown, and rejected by clean()
        self.fields["backend"] = forms.ChoiceField(
            choices=choices, initial=current, help_text="the queue technology; its guarantees and server state now"
        )
        by_alias = {s["alias"]: s for s in statuses}
        self.fields["options"].help_text = options_help(by_alias.get(current))


class LaunchForm(forms.Form):
    repeat = forms.IntegerField(
        min_value=1,
        max_value=MAX_REPEAT,
        initial=1,
        label="runs per experiment (K)",
        help_text="K > 1 stores the K runs as one repeat series, with their median and spread",
    )


class SweepForm(forms.Form):
    """One knob of one experiment over a list of values."""

    knob = forms.ChoiceField(help_text="a workload field, or option:NAME for one of the backend's options")
    values = forms.CharField(
        initial="1, 2, 4, 8",
        help_text="comma-separated, run in this order, e.g. 1, 2, 4, 8",
        widget=forms.TextInput(attrs={"size": 40}),
    )

    def __init__(self, *args: Any, experiment: Experiment, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["knob"].choices = [(k, k) for k in sweep_knobs(backend=experiment.backend)]


class BaselineForm(forms.Form):
    """The compare page's baseline picker (a GET form)."""

    ids = forms.CharField(widget=forms.HiddenInput)
    baseline = forms.TypedChoiceField(coerce=int, label="baseline run")

    def __init__(self, *args: Any, run_ids: list[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["baseline"].choices = [(pk, f"run {pk}") for pk in run_ids]
