"""Staff-only views. Thin: they parse the request and call selectors."""

from __future__ import annotations

import math

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponseBadRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from experiments import selectors
from experiments.models import Run


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
        after_t_s = _after_t_s(request.GET.get("after"))
    except ValueError:
        return HttpResponseBadRequest("after must be a finite number of seconds (a sample's t_s)")
    return JsonResponse({
        "run": {
            "id": run.pk,
            "status": run.status,
            "verdict": run.verdict,
            "events": (run.spec or {}).get("events"),
            "progress": selectors.run_progress(run=run),
            "error": run.error,
        },
        "columns": selectors.run_samples_columns(run_id=run.pk, after_t_s=after_t_s),
    })


def _after_t_s(raw: str | None) -> float | None:
    """The ``after`` parameter as seconds, ``None`` when absent; raises ``ValueError`` when it
    is not a finite number (``nan`` would match no sample and hide that the client is wrong)."""
    if not raw:
        return None
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError(raw)
    return value
