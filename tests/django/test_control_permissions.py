"""Each control needs its model permission (``experiments.permissions``), the same in the admin
and on the live page: a view-only staff user is offered none of them and is refused every one
(nothing created, nothing changed); a staff user with the permissions may use them all."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from experiments.models import Experiment, Run, RunSeries
from tests.support.rows import stored_spec

pytestmark = pytest.mark.django_db

VIEW_ONLY = ("view_experiment", "view_run", "view_runseries")
OPERATOR = (*VIEW_ONLY, "add_run", "add_experiment", "change_run", "change_runseries")
#: The controls that are views of their own (not admin actions): they answer 403.
BUTTONS = ("admin cancel button", "admin re-run button", "live cancel", "live launch again")
CHANGELIST = {model: reverse(f"admin:experiments_{model}_changelist") for model in ("experiment", "run", "runseries")}


def staff(django_user_model, name: str, codenames: tuple[str, ...]):
    user = django_user_model.objects.create_user(name, password="x" * 12, is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="experiments", codename__in=codenames))
    return user


def world() -> dict:
    """An experiment, a queued run, a finished run and a running series with a queued run."""
    experiment = Experiment.objects.create(name="perm-exp", backend="memory", events=1000)
    spec = stored_spec("memory")
    series = RunSeries.objects.create(experiment=experiment, kind=RunSeries.Kind.REPEAT)
    return {
        "experiment": experiment,
        "series": series,
        "queued": Run.objects.create(experiment=experiment, backend="memory", spec=spec),
        "finished": Run.objects.create(
            experiment=experiment, backend="memory", spec=spec, status=Run.Status.SUCCEEDED, finished_at=timezone.now()
        ),
        "in_series": Run.objects.create(experiment=experiment, backend="memory", spec=spec, series=series),
    }


def snapshot() -> tuple:
    return (
        sorted(Experiment.objects.values_list("pk", "name")),
        sorted(Run.objects.values_list("pk", "status")),
        sorted(RunSeries.objects.values_list("pk", "status")),
    )


def action(client, model: str, name: str, objects, **extra):
    data = {"action": name, helpers.ACTION_CHECKBOX_NAME: [str(o.pk) for o in objects], "index": "0", **extra}
    return client.post(CHANGELIST[model], data)


def posts(w: dict) -> list[tuple[str, Callable]]:
    """Every control, as the POST that uses it: (name, send(client) -> response)."""
    e, queued, finished, series = w["experiment"], w["queued"], w["finished"], w["series"]
    return [
        ("launch", lambda c: action(c, "experiment", "launch", [e], apply="1", repeat="2")),
        ("clone", lambda c: action(c, "experiment", "clone", [e])),
        ("sweep", lambda c: action(c, "experiment", "sweep", [e], apply="1", knob="consumers", values="1, 2")),
        ("cancel", lambda c: action(c, "run", "cancel", [queued])),
        ("rerun", lambda c: action(c, "run", "rerun", [finished])),
        ("cancel_series", lambda c: action(c, "runseries", "cancel_series", [series])),
        ("admin cancel button", lambda c: c.post(reverse("admin:experiments_run_cancel", args=[queued.pk]))),
        ("admin re-run button", lambda c: c.post(reverse("admin:experiments_run_rerun", args=[finished.pk]))),
        ("live cancel", lambda c: c.post(reverse("dashboard:run_cancel", args=[queued.pk]))),
        ("live launch again", lambda c: c.post(reverse("dashboard:run_launch_again", args=[finished.pk]))),
    ]


def offered_actions(client, model: str) -> set[str]:
    response = client.get(CHANGELIST[model])
    assert response.status_code == 200
    form = response.context["action_form"]
    return {value for value, _ in form.fields["action"].choices if value} if form else set()


def test_a_view_only_staff_user_is_offered_no_control_and_refused_every_one(client, django_user_model):
    w = world()
    client.force_login(staff(django_user_model, "viewer", VIEW_ONLY))
    assert offered_actions(client, "experiment") == set()
    assert offered_actions(client, "run") == {"compare", "export_csv", "export_json"}
    assert offered_actions(client, "runseries") == set()
    run_page = client.get(reverse("admin:experiments_run_change", args=[w["queued"].pk])).content.decode()
    assert reverse("admin:experiments_run_cancel", args=[w["queued"].pk]) not in run_page
    assert reverse("admin:experiments_run_rerun", args=[w["queued"].pk]) not in run_page
    live_page = client.get(reverse("dashboard:run", args=[w["queued"].pk])).content.decode()
    assert 'id="cancel"' not in live_page and 'id="launch-again"' not in live_page
    before = snapshot()
    for name, send in posts(w):
        response = send(client)
        # an action the admin does not offer is not run (the list comes back, or "No action
        # selected"); a button's view answers 403
        assert response.status_code == 403 if name in BUTTONS else response.status_code in (200, 302), name
        assert snapshot() == before, name


def test_a_staff_user_with_the_permissions_may_use_every_control(client, django_user_model):
    w = world()
    client.force_login(staff(django_user_model, "operator", OPERATOR))
    assert offered_actions(client, "experiment") == {"launch", "clone", "sweep"}
    assert {"cancel", "rerun"} <= offered_actions(client, "run")
    assert offered_actions(client, "runseries") == {"cancel_series"}
    run_page = client.get(reverse("admin:experiments_run_change", args=[w["queued"].pk])).content.decode()
    assert reverse("admin:experiments_run_cancel", args=[w["queued"].pk]) in run_page
    assert reverse("admin:experiments_run_rerun", args=[w["queued"].pk]) in run_page
    live_page = client.get(reverse("dashboard:run", args=[w["queued"].pk])).content.decode()
    assert 'id="cancel"' in live_page and 'id="launch-again"' in live_page
    sent = dict(posts(w))
    e = w["experiment"]

    def new_runs() -> int:
        return Run.objects.filter(experiment=e).count()

    runs = new_runs()
    assert sent["launch"](client).status_code == 302 and new_runs() == runs + 2
    assert sent["clone"](client).status_code == 302 and Experiment.objects.filter(name="perm-exp (copy)").exists()
    assert sent["sweep"](client).status_code == 302 and RunSeries.objects.filter(kind=RunSeries.Kind.SWEEP).exists()
    assert sent["cancel"](client).status_code == 302
    assert Run.objects.get(pk=w["queued"].pk).status == Run.Status.CANCELLED
    runs = new_runs()
    assert sent["rerun"](client).status_code == 302 and new_runs() == runs + 1
    assert sent["cancel_series"](client).status_code == 302
    assert RunSeries.objects.get(pk=w["series"].pk).status == RunSeries.Status.CANCELLED
    runs = new_runs()
    assert sent["admin re-run button"](client).status_code == 302 and new_runs() == runs + 1
    assert sent["live launch again"](client).status_code == 302 and new_runs() == runs + 2
    queued = Run.objects.filter(experiment=e, status=Run.Status.QUEUED).order_by("pk")
    first, second = queued[0], queued[1]
    assert client.post(reverse("admin:experiments_run_cancel", args=[first.pk])).status_code == 302
    assert client.post(reverse("dashboard:run_cancel", args=[second.pk])).status_code == 302
    assert {Run.objects.get(pk=r.pk).status for r in (first, second)} == {Run.Status.CANCELLED}


def test_cancelling_a_series_needs_the_run_permission_too(client, django_user_model):
    w = world()
    client.force_login(staff(django_user_model, "series-only", (*VIEW_ONLY, "change_runseries")))
    assert offered_actions(client, "runseries") == set()
    action(client, "runseries", "cancel_series", [w["series"]])
    assert RunSeries.objects.get(pk=w["series"].pk).status == RunSeries.Status.RUNNING
