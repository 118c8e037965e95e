"""Thin admin: lists and read-only figures. Launch actions arrive with the launch issue."""

from django.contrib import admin

from experiments.models import Experiment, Run, Sample


class RunInline(admin.TabularInline):
    model = Run
    fields = ("status", "verdict", "throughput_eps", "latency_p50_ms", "latency_p99_ms", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("name", "backend", "events", "producers", "consumers", "events_per_message", "batch", "created_at")
    list_filter = ("backend",)
    search_fields = ("name", "notes")
    inlines = [RunInline]


class SampleInline(admin.TabularInline):
    model = Sample
    fields = (
        "t_s", "offered_eps", "due", "produced", "consumed", "produce_eps", "consume_eps", "depth", "depth_detail", "backlog",
        "p50_ms", "p99_ms", "max_ms", "send_delay_p99_ms",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id", "experiment", "status", "verdict", "throughput_eps", "duration_s",
        "latency_p50_ms", "latency_p99_ms", "lost", "duplicates", "created_at",
    )
    list_filter = ("status", "verdict", "experiment")
    readonly_fields = [f.name for f in Run._meta.fields]
    inlines = [SampleInline]

    def has_add_permission(self, request):
        return False  # runs are launched, not typed in
