"""Staff-only views. Thin: they parse the request and call selectors (the pages, which only
read: a GET writes nothing) or services (the controls, POSTs that need the permissions of
``experiments.permissions``, as in the admin)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from experiments import permissions, selectors
from experiments.live import source as live
from experiments.models import Run
from experiments.services import launches


# staff_member_required sends anonymous and non-staff users to the admin login page (a
# redirect, no data); never_cache, since a polled run changes every second and is private.
@require_GET
@staff_member_required
@never_cache
def run_samples(request: HttpRequest, run_id: int) -> JsonResponse | HttpResponseBadRequest:
    """``{"run": {id, status, verdict, events, progress, error}, "columns": {name: [...]}}``;
    ``?after=<t_s>`` returns only the samples after ``t_s``. 404 for a missing run."""
    run = get_object_or_404(Run, pk=run_id)
    try:
        after_t_s = live.after_t_s_parse(request.GET.get("after"))
    except ValueError:
        return HttpResponseBadRequest("after must be a finite number of seconds (a sample's t_s)")
    return JsonResponse(
        {
            "run": {
                "id": run.pk,
                "status": run.status,
                "verdict": run.verdict,
                "events": (run.spec or {}).get("events"),
                "progress": selectors.run_progress(run=run),
                "error": run.error,
            },
            "columns": selectors.run_samples_columns(run_id=run.pk, after_t_s=after_t_s),
        }
    )


# -- the live dashboard ------------------------------------------------------------------------
# Pages only: their figures come over the websockets (consumers.py). Staff only, like the
# websockets; the controls are POSTs, CSRF-protected by the middleware, and each needs its
# permissions (a staff user without them gets a 403 and the page does not show the control).


@require_GET
@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """The overview: running and recent runs, live over ``ws/runs/``."""
    return render(request, "experiments/dashboard.html")


@require_GET
@staff_member_required
def run_live(request: HttpRequest, run_id: int) -> HttpResponse:
    """A run's page, live over ``ws/runs/<id>/`` while it runs, its full history once it ended
    (the same page: the socket sends the history first)."""
    run = get_object_or_404(Run.objects.select_related("experiment"), pk=run_id)
    return render(
        request,
        "experiments/run_live.html",
        {
            "run": run,
            "spec_summary": selectors.run_spec_summary(spec=run.spec or {}),
            "steady": (run.spec or {}).get("rate_eps") is not None,
            "in_flight": run.status in (Run.Status.QUEUED, Run.Status.RUNNING),
            "can_cancel": permissions.user_may(request.user, permissions.CANCEL_RUN),
            "can_launch": permissions.user_may(request.user, permissions.LAUNCH),
        },
    )


@require_POST
@staff_member_required
@permission_required(permissions.LAUNCH, raise_exception=True)
def run_launch_again(request: HttpRequest, run_id: int) -> HttpResponse:
    """Launch the run's experiment again (as it is defined now) and open the new run's page."""
    run = get_object_or_404(Run.objects.select_related("experiment"), pk=run_id)
    try:
        (new_run,) = launches.experiment_launch(experiment=run.experiment)
    except ValidationError as exc:
        messages.error(request, f"Not launched: {' '.join(exc.messages)}")
        return redirect("dashboard:run", run_id=run.pk)
    messages.success(request, f"Run {new_run.pk} of {run.experiment.name} launched.")
    return redirect("dashboard:run", run_id=new_run.pk)


@require_POST
@staff_member_required
@permission_required(permissions.CANCEL_RUN, raise_exception=True)
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    """Cancel the run (``launches.run_stop``) and come back to its page, which shows the end."""
    run = get_object_or_404(Run, pk=run_id)
    done, message = launches.run_stop(run=run)
    (messages.success if done else messages.warning)(request, message)
    return redirect("dashboard:run", run_id=run.pk)
