"""The control room: define experiments; launch, sweep, clone them; cancel, re-run, compare and
export their runs; follow a series.

Thin: an action filters the queryset and calls a service (``launches``, ``services``,
``compare``, ``export``), and answers with an admin message; an action on a row in the wrong
state says why nothing happened and changes nothing. The pages' data shaping lives in
``admin_pages``; forms in ``forms``. Who may use an action or a button is decided in
``experiments.permissions`` (the live page follows it too): the admin offers a user only the
controls the user may use. A page (a GET) only reads: it shows the runs as stored, and stale
runs are found by the executors, ``cleanup`` and the cluster's schedule (``services.cleanup``).
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.views.decorators.http import require_POST

from experiments import permissions
from experiments.admin import presenters as admin_pages
from experiments.admin.forms import BaselineForm, ExperimentForm, LaunchForm, SweepForm
from experiments.hosts.heartbeat import hosts_alive
from experiments.models import Experiment, Host, Run, RunSeries
from experiments.reports.compare import CompareError, comparison_as_dict, comparison_chart_data, runs_compare
from experiments.reports.export import runs_export_csv_chunks, runs_export_json_chunks
from experiments.selectors import RunsNotFound, runs_by_ids, scorecard_latest
from experiments.services.launches import (
    experiment_clone,
    experiment_launch,
    run_rerun,
    run_stop,
    series_launch_sweep,
    sweep_values_parse,
)
from experiments.services.series import series_cancel

EXPORTS = {  # format -> (chunks, content type)
    "csv": (runs_export_csv_chunks, "text/csv; charset=utf-8"),
    "json": (runs_export_json_chunks, "application/json"),
}


def _url(name: str, *args: object) -> str:
    return reverse(f"admin:experiments_{name}", args=args)


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    form = ExperimentForm
    list_display = (
        "name",
        "backend",
        "shape",
        "events",
        "producers",
        "consumers",
        "events_per_message",
        "batch",
        "runs_link",
        "live_link",
        "created_at",
    )
    list_filter = ("backend",)
    search_fields = ("name", "notes")
    readonly_fields = ("runs_link",)
    fieldsets = (
        (None, {"fields": ("name", "backend", "notes", "runs_link")}),
        (
            "Workload (burst)",
            {
                "fields": ("events", "producers", "consumers", "events_per_message", "batch", "idle_timeout_s"),
                "description": "A burst sends the integers 1..events as fast as it can; leave the rate empty.",
            },
        ),
        (
            "Steady workload",
            {
                "fields": ("rate_eps", "duration_s", "warmup_s", "arrival", "seed"),
                "description": "Set a rate for a steady run: events is then rate x (warm-up + duration).",
            },
        ),
        (
            "Faults",
            {
                "fields": ("faults", "replace_after_s"),
                "description": "Steady runs only: what goes wrong, and when (seconds into the run). Each fault is a "
                "marker on the run's charts, with its outcome and the time to recover.",
            },
        ),
        ("Backend options", {"fields": ("options",)}),
    )
    actions = ("launch", "clone", "sweep")

    # the actions' ``permissions``: Django offers an action only if has_<name>_permission says yes
    def has_launch_permission(self, request: HttpRequest) -> bool:
        return permissions.user_may(request.user, permissions.LAUNCH)

    def has_clone_permission(self, request: HttpRequest) -> bool:
        return permissions.user_may(request.user, permissions.CLONE)

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(run_count=Count("runs"), latest_run=Max("runs__id"))

    @admin.display(description="shape")
    def shape(self, obj: Experiment) -> str:
        return f"steady {obj.rate_eps:g} events/s" if obj.rate_eps else "burst"

    @admin.display(description="runs")
    def runs_link(self, obj: Experiment) -> str:
        if not obj.pk:
            return "-"
        count = getattr(obj, "run_count", None)
        label = f"{count} run{'s' if count != 1 else ''}" if count is not None else "its runs"
        return format_html('<a href="{}?experiment__id__exact={}">{}</a>', _url("run_changelist"), obj.pk, label)

    @admin.display(description="live")
    def live_link(self, obj: Experiment) -> str:
        """Its latest run's live page, or the overview for an experiment never run."""
        latest = getattr(obj, "latest_run", None)  # annotated: no query per row
        url = reverse("dashboard:run", args=[latest]) if latest else reverse("dashboard:overview")
        return format_html('<a href="{}">live</a>', url)

    @admin.action(description="Launch the selected experiments (K runs each)", permissions=["launch"])
    def launch(self, request: HttpRequest, queryset):
        form = LaunchForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self._action_page(request, queryset, form, action="launch", title="Launch runs")
        repeat = form.cleaned_data["repeat"]
        for experiment in queryset:
            try:
                runs = experiment_launch(experiment=experiment, repeat=repeat)
            except ValidationError as exc:
                self.message_user(request, f"{experiment} not launched: {' '.join(exc.messages)}", messages.ERROR)
                continue
            self.message_user(request, admin_pages.launched_message(experiment, runs), messages.SUCCESS)
        return None

    @admin.action(description="Clone the selected experiments", permissions=["clone"])
    def clone(self, request: HttpRequest, queryset) -> None:
        for experiment in queryset:
            copy = experiment_clone(experiment=experiment)
            self.message_user(
                request,
                format_html(
                    'Cloned {} as <a href="{}">{}</a> (without its runs).',
                    experiment,
                    _url("experiment_change", copy.pk),
                    copy,
                ),
                messages.SUCCESS,
            )

    @admin.action(description="Sweep one knob of the selected experiment", permissions=["launch"])
    def sweep(self, request: HttpRequest, queryset):
        if queryset.count() != 1:
            self.message_user(
                request, "A sweep varies one experiment: select exactly one; nothing was launched.", messages.WARNING
            )
            return None
        experiment = queryset.get()
        form = SweepForm(request.POST if "apply" in request.POST else None, experiment=experiment)
        if form.is_valid():
            values = sweep_values_parse(text=form.cleaned_data["values"])
            try:
                series = series_launch_sweep(experiment=experiment, knob=form.cleaned_data["knob"], values=values)
            except ValidationError as exc:
                form.add_error("values", exc)
                self.message_user(request, f"Sweep not launched: {' '.join(exc.messages)}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    format_html(
                        'Sweep of {} over {} launched: <a href="{}">series {}</a>, {} queued runs, '
                        "executed one after another.",
                        form.cleaned_data["knob"],
                        ", ".join(map(str, values)),
                        _url("runseries_change", series.pk),
                        series.pk,
                        len(values),
                    ),
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(_url("runseries_change", series.pk))
        return self._action_page(request, queryset, form, action="sweep", title=f"Sweep {experiment}")

    def _action_page(self, request: HttpRequest, queryset, form, *, action: str, title: str) -> TemplateResponse:
        """An action's intermediate page: the selected rows, the form, and the POST that comes
        back to the same action with ``apply``."""
        context = {
            **self.admin_site.each_context(request),
            "title": title,
            "opts": self.model._meta,
            "form": form,
            "action": action,
            "objects": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/experiments/experiment/action_form.html", context)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "experiment",
        "backend",
        "status",
        "started_at",
        "duration",
        "events_s",
        "p50",
        "p99",
        "verdict",
        "lost",
        "duplicates",
        "live_link",
    )
    list_filter = ("backend", "status", "verdict", "experiment", ("created_at", admin.DateFieldListFilter))
    search_fields = ("experiment__name",)
    list_select_related = ("experiment",)
    list_per_page = 50  # a page renders in under 300 ms with 10,000 runs (bench/bench_admin.py)
    actions = ("cancel", "rerun", "compare", "export_csv", "export_json")
    change_form_template = "admin/experiments/run/change_form.html"
    readonly_fields = (
        "experiment",
        "series_link",
        "status",
        "verdict",
        "error",
        "created_at",
        "started_at",
        "finished_at",
        "executor",
        "summary_table",
        "spec_pretty",
        "environment_pretty",
    )
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "experiment",
                    "series_link",
                    "status",
                    "verdict",
                    "error",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "executor",
                )
            },
        ),
        ("Result", {"fields": ("summary_table",)}),
        (
            "The spec as it ran",
            {
                "fields": ("spec_pretty",),
                "description": "The run's own copy: editing the experiment later does not change it.",
            },
        ),
        ("Environment", {"fields": ("environment_pretty",)}),
    )

    def get_queryset(self, request: HttpRequest):
        queryset = super().get_queryset(request)
        match = request.resolver_match
        if match and match.url_name == "experiments_run_changelist":
            # the list shows columns only: no JSON documents, and samples are never joined
            return queryset.defer("summary", "environment", "spec")
        return queryset.select_related("experiment", "series")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are launched, not typed in

    def has_change_permission(self, request: HttpRequest, obj: Run | None = None) -> bool:
        # a run's page is read-only (history); its actions have permissions of their own
        return False if obj is not None else super().has_change_permission(request)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return permissions.user_may(request.user, permissions.CANCEL_RUN)

    def has_launch_permission(self, request: HttpRequest) -> bool:
        return permissions.user_may(request.user, permissions.LAUNCH)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        extra = {
            **(extra_context or {}),
            "can_cancel": self.has_cancel_permission(request),
            "can_rerun": self.has_launch_permission(request),
            "live": Run.objects.filter(pk=object_id, status__in=admin_pages.LIVE).exists(),
        }
        return super().change_view(request, object_id, form_url, extra)

    @admin.display(description="live")
    def live_link(self, obj: Run) -> str:
        return format_html('<a href="{}">live</a>', reverse("dashboard:run", args=[obj.pk]))

    @admin.display(description="duration", ordering="duration_s")
    def duration(self, obj: Run) -> str:
        return admin_pages.number(obj.duration_s, "s")

    @admin.display(description="events/s", ordering="throughput_eps")
    def events_s(self, obj: Run) -> str:
        return admin_pages.number(obj.throughput_eps)

    @admin.display(description="p50", ordering="latency_p50_ms")
    def p50(self, obj: Run) -> str:
        return admin_pages.number(obj.latency_p50_ms, "ms")

    @admin.display(description="p99", ordering="latency_p99_ms")
    def p99(self, obj: Run) -> str:
        return admin_pages.number(obj.latency_p99_ms, "ms")

    @admin.display(description="series")
    def series_link(self, obj: Run) -> str:
        if not obj.series_id:
            return "-"
        return format_html('<a href="{}">{}</a>', _url("runseries_change", obj.series_id), obj.series)

    @admin.display(description="executor")
    def executor(self, obj: Run) -> str:
        return f"{obj.executor_host} pid {obj.executor_pid}" if obj.executor_pid else "-"

    @admin.display(description="key figures")
    def summary_table(self, obj: Run) -> str:
        return admin_pages.summary_html(obj)

    @admin.display(description="spec")
    def spec_pretty(self, obj: Run) -> str:
        return admin_pages.pretty_json(obj.spec)

    @admin.display(description="environment")
    def environment_pretty(self, obj: Run) -> str:
        return admin_pages.pretty_json(obj.environment)

    # -- actions ------------------------------------------------------------------------------

    @admin.action(description="Cancel the selected runs", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset) -> None:
        for run in queryset:
            done, message = run_stop(run=run)
            self.message_user(request, message, messages.SUCCESS if done else messages.WARNING)

    @admin.action(description="Re-run the selected runs (their own spec)", permissions=["launch"])
    def rerun(self, request: HttpRequest, queryset) -> None:
        for run in queryset:
            self._rerun(request, run)

    @admin.action(description="Compare the selected runs (the first is the baseline)")
    def compare(self, request: HttpRequest, queryset):
        ids = admin_pages.selected_ids(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME), queryset)
        if len(ids) < 2:
            self.message_user(request, "Select at least two runs to compare; nothing to show.", messages.WARNING)
            return None
        return HttpResponseRedirect(f"{_url('run_compare')}?ids={','.join(map(str, ids))}")

    @admin.action(description="Export the selected runs and their samples as CSV")
    def export_csv(self, request: HttpRequest, queryset):
        return self._export(
            request, admin_pages.selected_ids(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME), queryset), "csv"
        )

    @admin.action(description="Export the selected runs and their samples as JSON")
    def export_json(self, request: HttpRequest, queryset):
        return self._export(
            request, admin_pages.selected_ids(request.POST.getlist(helpers.ACTION_CHECKBOX_NAME), queryset), "json"
        )

    def _rerun(self, request: HttpRequest, run: Run) -> Run | None:
        try:
            new = run_rerun(run=run)
        except ValidationError as exc:
            self.message_user(request, f"Run {run.pk} not re-run: {' '.join(exc.messages)}", messages.ERROR)
            return None
        self.message_user(
            request,
            format_html(
                'Run {} queued again as <a href="{}">run {}</a> with the spec it ran.',
                run.pk,
                _url("run_change", new.pk),
                new.pk,
            ),
            messages.SUCCESS,
        )
        return new

    def _export(self, request: HttpRequest, ids: list[int], fmt: str) -> HttpResponse:
        chunks, content_type = EXPORTS[fmt]
        runs = runs_by_ids(ids=ids)
        response = StreamingHttpResponse(chunks(runs=runs), content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="imqueue-runs-{"-".join(map(str, ids[:10]))}.{fmt}"'
        self.message_user(request, f"Exported {len(runs)} run(s) with their samples as {fmt.upper()}.")
        return response

    # -- pages of their own (the admin's login, header and breadcrumbs) ------------------------

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("compare/", view(self.compare_view), name="experiments_run_compare"),
            path("export/", view(self.export_view), name="experiments_run_export"),
            path("<int:run_id>/cancel/", view(require_POST(self.cancel_view)), name="experiments_run_cancel"),
            path("<int:run_id>/rerun/", view(require_POST(self.rerun_view)), name="experiments_run_rerun"),
            *super().get_urls(),
        ]

    def compare_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            ids = admin_pages.parse_ids(request.GET.get("ids", ""))
            form = BaselineForm(request.GET, run_ids=ids)
            baseline = int(request.GET["baseline"]) if request.GET.get("baseline", "").isdigit() else None
            runs = runs_by_ids(ids=ids)
            comparison = comparison_as_dict(runs_compare(runs=runs, baseline_id=baseline))
        except (CompareError, RunsNotFound, ValueError) as exc:
            self.message_user(request, f"Cannot compare: {exc}", messages.ERROR)
            return HttpResponseRedirect(_url("run_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Compare runs {', '.join(map(str, ids))}",
            "opts": self.model._meta,
            "form": form,
            "comparison": comparison,
            "runs": runs,
            "rows": admin_pages.compare_rows(comparison),
            "chart_data": comparison_chart_data(runs=runs),
        }
        return TemplateResponse(request, "admin/experiments/run/compare.html", context)

    def export_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        fmt = request.GET.get("format", "csv")
        try:
            ids = admin_pages.parse_ids(request.GET.get("ids", ""))
            if fmt not in EXPORTS or not ids:
                raise ValueError(f"ask for ids=1,2 and format csv or json, got format {fmt!r}")
            return self._export(request, ids, fmt)
        except (RunsNotFound, ValueError) as exc:
            self.message_user(request, f"Cannot export: {exc}", messages.ERROR)
            return HttpResponseRedirect(_url("run_changelist"))

    def cancel_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        done, message = run_stop(run=get_object_or_404(Run, pk=run_id))
        self.message_user(request, message, messages.SUCCESS if done else messages.WARNING)
        return HttpResponseRedirect(_url("run_change", run_id))

    def rerun_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        if not self.has_launch_permission(request):
            raise PermissionDenied
        new = self._rerun(request, get_object_or_404(Run, pk=run_id))
        return HttpResponseRedirect(_url("run_change", new.pk if new else run_id))


@admin.register(RunSeries)
class RunSeriesAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "experiment", "knob", "status", "created_at")
    list_filter = ("kind", "status")
    search_fields = ("experiment__name",)
    list_select_related = ("experiment",)
    actions = ("cancel_series",)
    change_form_template = "admin/experiments/runseries/change_form.html"
    fields = ("experiment", "kind", "status", "knob", "values", "error", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a series is launched (repeat, sweep), not typed in

    def has_change_permission(self, request: HttpRequest, obj: RunSeries | None = None) -> bool:
        return False if obj is not None else super().has_change_permission(request)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return permissions.user_may(request.user, permissions.CANCEL_SERIES)

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("scorecard/", view(self.scorecard_view), name="experiments_runseries_scorecard"),
            *super().get_urls(),
        ]

    def scorecard_view(self, request: HttpRequest) -> HttpResponse:
        """The latest scorecard's page, or where it would be, with how to make one."""
        latest = scorecard_latest()
        if latest is None:
            self.message_user(
                request,
                "No scorecard yet: run `python manage.py scorecard` (a few minutes; "
                "--backends and --faults choose the cells).",
                messages.WARNING,
            )
            return redirect("admin:experiments_runseries_changelist")
        return redirect("admin:experiments_runseries_change", latest.pk)

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None):
        series = get_object_or_404(RunSeries.objects.select_related("experiment"), pk=object_id)
        extra = {**(extra_context or {}), **admin_pages.series_context(series)}
        return super().change_view(request, object_id, form_url, extra)

    @admin.action(description="Cancel the selected series", permissions=["cancel"])
    def cancel_series(self, request: HttpRequest, queryset) -> None:
        for series in queryset:
            if series_cancel(series=series):
                self.message_user(
                    request,
                    f"Series {series.pk} cancelled: its queued runs will not start, a running one stops within 2 s.",
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    f"Series {series.pk} is {series.status}: only a running series can be cancelled; nothing changed.",
                    messages.WARNING,
                )


@admin.register(Host)
class HostAdmin(admin.ModelAdmin):
    """Load hosts, as their heartbeats wrote them: read-only (a host writes its own row)."""

    list_display = ("name", "answers", "queue", "machine", "cpus", "busy", "workers", "last_seen", "clock")
    readonly_fields = [f.name for f in Host._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Host | None = None) -> bool:
        return False

    @admin.display(boolean=True, description="answers")
    def answers(self, host: Host) -> bool:
        return host.pk in {h.pk for h in hosts_alive(names=[host.name])}

    @admin.display(description="clock offset")
    def clock(self, host: Host) -> str:
        if host.clock_offset_s is None:
            return "not measured"
        return f"{host.clock_offset_s * 1000:+.3f} ms ± {host.clock_uncertainty_s * 1000:.3f} ms"
