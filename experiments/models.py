"""Experiment definitions, their runs and the runs' interval samples. No logic here: writes
live in ``services.py``, reads in ``selectors.py``."""

from __future__ import annotations

from django.db import models

from experiments.validation import experiment_validate
from queues.workload.spec import ARRIVALS, spec_defaults

SPEC = spec_defaults()


class Experiment(models.Model):
    """A workload on a backend with its knobs. The spec fields and their defaults are those of
    ``queues.workload.spec.WorkloadSpec`` (a test checks that they stay so); ``clean`` validates
    them as a run would, so the admin cannot save an experiment that cannot run."""

    name = models.CharField(max_length=200, unique=True)
    backend = models.CharField(max_length=50, default=SPEC["backend"])
    events = models.PositiveBigIntegerField(default=SPEC["events"])
    producers = models.PositiveIntegerField(default=SPEC["producers"])
    consumers = models.PositiveIntegerField(default=SPEC["consumers"])
    events_per_message = models.PositiveIntegerField(default=SPEC["events_per_message"])
    batch = models.PositiveIntegerField(default=SPEC["batch"], help_text="messages per send or receive call")
    idle_timeout_s = models.FloatField(default=SPEC["idle_timeout_s"])
    rate_eps = models.FloatField(
        null=True,
        blank=True,
        default=SPEC["rate_eps"],
        help_text="events/s for a steady run (total over producers); empty for a burst",
    )
    duration_s = models.FloatField(
        default=SPEC["duration_s"], help_text="steady run: measured seconds after the warm-up"
    )
    warmup_s = models.FloatField(
        default=SPEC["warmup_s"], help_text="steady run: seconds recorded but left out of the summary"
    )
    arrival = models.CharField(max_length=10, default=SPEC["arrival"], choices=[(a, a) for a in ARRIVALS])
    seed = models.PositiveIntegerField(default=SPEC["seed"], help_text="seed of the poisson arrival times")
    faults = models.JSONField(
        default=list,
        blank=True,
        help_text="steady run: faults as KIND@T[:ARG], e.g. kill-consumer@3, pause-consumer@2:1.5, "
        "cut-connections@4, restart-server@4:aof-always, poison@2:10, kill-producer@3",
    )
    replace_after_s = models.FloatField(
        default=SPEC["replace_after_s"],
        help_text="a killed worker's replacement starts this many seconds later",
    )
    options = models.JSONField(default=dict, blank=True, help_text='backend options, e.g. {"prefetch": 500}')
    placement = models.JSONField(
        default=dict,
        blank=True,
        help_text='run the workers on load hosts, e.g. {"producers": {"a": 2}, "consumers": {"b": 2, "c": 2}}; '
        "empty: on the machine that executes the run",
    )
    notes = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """Raises ``ValidationError`` (by field where it can) for a spec or options a run
        would reject."""
        experiment_validate(experiment=self)


class RunSeries(models.Model):
    """Runs that belong together: the repetitions of ``--repeat`` (``result``: their median and
    spread), the steps of a saturation search (``result``: the curve and the highest good
    rate), each step a run of its own, or a sweep of one ``knob`` over ``values`` (``result``:
    each value's figures). ``status`` is the series' own: running until its last run
    ends, then succeeded, or the status of the run that stopped it; cancelled stops it."""

    class Kind(models.TextChoices):
        REPEAT = "repeat"
        FIND_MAX = "find-max"
        SWEEP = "sweep"
        SCORECARD = "scorecard"

    class Status(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    experiment = models.ForeignKey(Experiment, related_name="series", on_delete=models.CASCADE)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RUNNING, db_index=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    result = models.JSONField(default=dict, blank=True)
    knob = models.CharField(max_length=100, blank=True, help_text="sweep: the field or option:NAME varied")
    values = models.JSONField(default=list, blank=True, help_text="sweep: the knob's values, in run order")

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "run series"

    def __str__(self) -> str:
        return f"{self.kind} series {self.pk} of {self.experiment.name}"


class Run(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    experiment = models.ForeignKey(Experiment, related_name="runs", on_delete=models.CASCADE)
    series = models.ForeignKey(RunSeries, related_name="runs", null=True, blank=True, on_delete=models.SET_NULL)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # the spec's backend as a column of its own, for the admin's filter and list (no JSON reads)
    backend = models.CharField(max_length=50, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    spec = models.JSONField(default=dict, help_text="the workload as run (a snapshot of the experiment)")
    environment = models.JSONField(default=dict, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    verdict = models.CharField(max_length=20, blank=True, db_index=True)
    duration_s = models.FloatField(null=True, blank=True)
    throughput_eps = models.FloatField(null=True, blank=True)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p99_ms = models.FloatField(null=True, blank=True)
    unique = models.BigIntegerField(null=True, blank=True)
    duplicates = models.BigIntegerField(null=True, blank=True)
    lost = models.BigIntegerField(null=True, blank=True)
    # Set when the run starts, for ``cleanup``: the server-side queue the run uses (its tables or
    # keys carry this name), and the process executing it (a running row whose process is gone
    # is stale).
    queue_name = models.CharField(max_length=200, blank=True, help_text="<namespace>.<run id> on the backend's server")
    executor_host = models.CharField(max_length=255, blank=True)
    executor_pid = models.PositiveIntegerField(null=True, blank=True)
    queue_removed = models.BooleanField(default=False, help_text="cleanup found the run's queue gone, or removed it")
    # written by the executor every few seconds while the run is running: a running row whose
    # heartbeat stopped lost its executor (cluster killed, machine restarted) and is failed
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.experiment.name} ({self.status})"


class Sample(models.Model):
    """One interval (about a second) of a run: see ``queues.measurement.histograms.IntervalSample``."""

    run = models.ForeignKey(Run, related_name="samples", on_delete=models.CASCADE)
    t_s = models.FloatField()
    produced = models.BigIntegerField()
    consumed = models.BigIntegerField()
    unique = models.BigIntegerField()
    produce_eps = models.FloatField()
    consume_eps = models.FloatField()
    depth = models.BigIntegerField(null=True, blank=True)
    backlog = models.BigIntegerField()
    p50_ms = models.FloatField(null=True, blank=True)
    p90_ms = models.FloatField(null=True, blank=True)
    p99_ms = models.FloatField(null=True, blank=True)
    p999_ms = models.FloatField(null=True, blank=True)
    max_ms = models.FloatField(null=True, blank=True)
    offered_eps = models.FloatField(null=True, blank=True)
    send_delay_p99_ms = models.FloatField(null=True, blank=True)
    due = models.BigIntegerField(null=True, blank=True)  # events the schedule had made due by t_s
    depth_detail = models.JSONField(null=True, blank=True)  # the backend's parts of depth, where it shows them
    markers = models.JSONField(null=True, blank=True)  # what happened in the interval: faults, replacements, reconnects

    class Meta:
        ordering = ["run", "t_s"]


class Host(models.Model):
    """A load host: a ``qcluster`` started with ``IMQ_HOST_NAME``, which executes the shares of
    distributed runs routed to its queue. Written by the host itself every few seconds
    (``experiments.hosts.heartbeat``); a host whose ``last_seen`` is old does not answer."""

    name = models.CharField(max_length=100, unique=True)
    queue = models.CharField(max_length=200, help_text="its django-q2 cluster name: tasks routed there")
    machine = models.CharField(max_length=255, blank=True, help_text="the machine's hostname")
    pid = models.PositiveIntegerField(null=True, blank=True, help_text="its qcluster's main process")
    cpus = models.PositiveIntegerField(default=1)
    workers = models.PositiveIntegerField(default=1, help_text="its cluster's workers: shares it can run at once")
    busy = models.PositiveIntegerField(default=0, help_text="shares of runs it is running now")
    started_at = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(db_index=True)
    clock_offset_s = models.FloatField(null=True, blank=True, help_text="reference clock minus this host's clock")
    clock_uncertainty_s = models.FloatField(
        null=True, blank=True, help_text="the offset is true within this, either way"
    )
    clock_measured_at = models.DateTimeField(null=True, blank=True)
    clock_reference = models.CharField(max_length=50, blank=True, help_text="whose clock the offset is against")

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"host {self.name}"


class HostShare(models.Model):
    """One host's share of a distributed run: its workers, its join, its start and its end.
    The coordinator (the run's executor) creates it and routes a task to the host's queue; the
    host writes its status, clock offset and reports; the coordinator writes the start time
    and the stop (``experiments.hosts.distribution``)."""

    class Status(models.TextChoices):
        ENQUEUED = "enqueued"
        JOINED = "joined"  # its workers are ready, at the start barrier
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    run = models.ForeignKey(Run, related_name="shares", on_delete=models.CASCADE)
    host = models.CharField(max_length=100)
    producers = models.JSONField(default=list)
    consumers = models.JSONField(default=list)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ENQUEUED)
    error = models.TextField(blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    clock_offset_s = models.FloatField(null=True, blank=True)
    clock_uncertainty_s = models.FloatField(null=True, blank=True)
    start_ns = models.BigIntegerField(null=True, blank=True, help_text="the start, on the reference clock (ns)")
    latency_shifts = models.JSONField(null=True, blank=True, help_text="ns its consumers add, by producer")
    stop = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "host"], name="one_share_per_host")]

    def __str__(self) -> str:
        return f"share of run {self.run_id} on {self.host} ({self.status})"


class HostReport(models.Model):
    """A host's report (``queues.distributed.reports.ShareReport``, encoded), read and deleted by the
    coordinator."""

    share = models.ForeignKey(HostShare, related_name="reports", on_delete=models.CASCADE)
    seq = models.PositiveIntegerField()
    payload = models.BinaryField()
