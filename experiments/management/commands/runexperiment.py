"""``python manage.py runexperiment``: run one experiment now, store it, print the report."""

from __future__ import annotations

import json
import sys
import time

from experiments.execution.interrupts import Interrupts
from experiments.execution.run_lock import one_run_at_a_time
from experiments.management.base import BaseCommand, CommandError
from experiments.models import Run, RunSeries
from experiments.reports.text import format_report, format_spread
from experiments.selectors import run_json_summary
from experiments.services.runs import run_execute, run_prepare
from experiments.services.series import series_find_max, series_repeat
from experiments.validation import spec_validate
from queues.backends.options import options_from_pairs
from queues.errors import InvalidSpec, QueueError
from queues.run.launch import known_aliases
from queues.workload.faults import FAULT_KINDS
from queues.workload.spec import ARRIVALS, spec_defaults

DEFAULT_EXPERIMENT = "cli"
#: The spec's defaults come from ``WorkloadSpec``, its one definition.
SPEC = spec_defaults()
#: Measured seconds per step of ``--find-max`` when ``--duration`` is not given.
FIND_MAX_DURATION_S = 3


class Command(BaseCommand):
    help = "Send the integers 1..N through a queue backend, check the sum, store and print the run."

    def add_arguments(self, parser):
        parser.add_argument("--backend", default=SPEC["backend"], help=f"one of: {', '.join(known_aliases())}")
        parser.add_argument(
            "--events", help=f"how many integers (N) in a burst, e.g. 1000000 or 1e6 (default {SPEC['events']})"
        )
        parser.add_argument("--producers", default=SPEC["producers"], help="producer processes (default %(default)s)")
        parser.add_argument("--consumers", default=SPEC["consumers"], help="consumer processes (default %(default)s)")
        parser.add_argument(
            "--events-per-message",
            default=SPEC["events_per_message"],
            help="events packed in one queue message (default %(default)s)",
        )
        parser.add_argument(
            "--batch", default=SPEC["batch"], help="messages per send or receive call (default %(default)s)"
        )
        parser.add_argument(
            "--idle-timeout",
            default=SPEC["idle_timeout_s"],
            help="seconds without progress before the rest counts as lost (default %(default)s)",
        )
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="backend option (repeatable; listbackends shows each backend's)",
        )
        parser.add_argument(
            "--fault",
            action="append",
            default=[],
            metavar="KIND@T[:ARG]",
            help="steady run: a fault at T seconds (repeatable): "
            + "; ".join(usage.split("  ", 1)[0] for usage in FAULT_KINDS.values()),
        )
        parser.add_argument(
            "--replace-after",
            default=SPEC["replace_after_s"],
            help="seconds before a killed worker's replacement starts (default %(default)s)",
        )
        parser.add_argument(
            "--repeat", default="1", help="run the same spec K times, burst or steady; report the median and spread"
        )
        steady = parser.add_argument_group("steady flow (without --rate the run is a burst)")
        steady.add_argument("--rate", help="offered events/s, total over producers: an open-loop schedule")
        steady.add_argument(
            "--duration",
            help=f"measured seconds after the warm-up (default {SPEC['duration_s']:g}; "
            f"{FIND_MAX_DURATION_S} per step of --find-max)",
        )
        steady.add_argument(
            "--warmup",
            default=SPEC["warmup_s"],
            help="seconds recorded but left out of the summary (default %(default)s)",
        )
        steady.add_argument("--arrival", default=SPEC["arrival"], help=f"{' or '.join(ARRIVALS)} (default %(default)s)")
        steady.add_argument(
            "--find-max", action="store_true", help="search the highest rate that keeps up within --slo-p99-ms"
        )
        steady.add_argument("--slo-p99-ms", help="the p99 latency limit of --find-max, in ms")
        parser.add_argument(
            "--experiment", default=DEFAULT_EXPERIMENT, help="store the run under this experiment (created if missing)"
        )
        parser.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")

    def handle(self, *args, **opts):
        try:
            _refuse_ignored_flags(opts)
            options = options_from_pairs(opts["option"])
            spec = spec_validate(values=_spec_values(opts), options=options)
            repeat = _positive_int("--repeat", opts["repeat"])
            slo = _slo(opts) if opts["find_max"] else None
        except QueueError as exc:
            raise CommandError(str(exc)) from None
        # SIGINT and SIGTERM cancel the run (or series) cleanly: see experiments.execution.interrupts
        interrupts = Interrupts()
        waiting = "waits: another run is executing on this machine (runs execute one at a time)"
        with interrupts.caught(), one_run_at_a_time(on_wait=lambda: self.stderr.write(waiting)):
            try:
                if opts["find_max"]:
                    self._find_max(spec, options, slo, opts, interrupts)
                elif repeat > 1:
                    self._repeat(spec, options, repeat, opts, interrupts)
                else:
                    self._single(spec, options, opts, interrupts)
            except KeyboardInterrupt:
                raise CommandError(
                    "interrupted twice: stopped at once; the run is stored as failed", returncode=interrupts.exit_status
                ) from None

    def _single(self, spec, options, opts, interrupts):
        run = run_prepare(spec=spec, experiment_name=opts["experiment"], options=options)
        progress = _ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        run = run_execute(run=run, on_progress=progress, interrupted=interrupts)
        if progress:
            progress.close()
        if opts["json"]:
            self.stdout.write(json.dumps(run_json_summary(run=run), sort_keys=True))
        else:
            self.stdout.write(format_report(run))
        if run.status != Run.Status.SUCCEEDED:
            raise _failed(f"run {run.pk} {run.status}: {run.error}", interrupts)

    def _repeat(self, spec, options, repeat, opts, interrupts):
        series = series_repeat(
            spec=spec, experiment_name=opts["experiment"], repeat=repeat, options=options, interrupted=interrupts
        )
        if opts["json"]:
            self.stdout.write(json.dumps(series.result, sort_keys=True))
        else:
            self.stdout.write(format_spread(series))
        failed = [r for r in series.result["runs"] if r["status"] != Run.Status.SUCCEEDED]
        if failed:
            raise _failed(f"run {failed[0]['run_id']} {failed[0]['status']}: {failed[0]['error']}", interrupts)

    def _find_max(self, spec, options, slo, opts, interrupts):
        def show(point):
            if not opts["json"]:
                verdict = "ok" if point.ok else "over"
                self.stderr.write(
                    f"  {point.rate_eps:>12,.0f} events/s  p99 {point.p99_ms} ms  kept up {point.kept_up}  {verdict}"
                )

        start = spec.rate_eps or 1000.0
        series = series_find_max(
            spec=spec,
            experiment_name=opts["experiment"],
            slo_p99_ms=slo,
            start_rate_eps=start,
            options=options,
            on_step=show,
            interrupted=interrupts,
        )
        if opts["json"]:
            self.stdout.write(json.dumps(series.result, sort_keys=True))
        else:
            best = series.result["max_rate_eps"]
            found = f"{best:,.0f} events/s" if best else "none (even the lowest rate tried missed the SLO)"
            self.stdout.write(f"series {series.pk}: highest rate within p99 <= {slo} ms on {spec.backend}: {found}")
        if series.status != RunSeries.Status.SUCCEEDED:
            raise _failed(f"series {series.pk} {series.status}: {series.error}", interrupts)


def _failed(message: str, interrupts: Interrupts) -> CommandError:
    """Exit status 1, or 128 + the signal when an interrupt ended the run."""
    return CommandError(message, returncode=interrupts.exit_status if interrupts.signum else 1)


def _refuse_ignored_flags(opts) -> None:
    """A flag that this combination would silently ignore is an error, before anything is stored."""
    if opts["slo_p99_ms"] is not None and not opts["find_max"]:
        raise InvalidSpec("--slo-p99-ms is the p99 limit of --find-max: add --find-max, or leave --slo-p99-ms out")
    if opts["duration"] is not None and opts["rate"] is None and not opts["find_max"]:
        raise InvalidSpec(
            "--duration is the measured time of a steady run: add --rate (or --find-max), "
            "or leave --duration out for a burst of --events"
        )


def _spec_values(opts) -> dict:
    values = {
        "backend": opts["backend"],
        "events": opts["events"],
        "producers": opts["producers"],
        "consumers": opts["consumers"],
        "events_per_message": opts["events_per_message"],
        "batch": opts["batch"],
        "idle_timeout_s": opts["idle_timeout"],
        "arrival": opts["arrival"],
        "faults": opts["fault"],
        "replace_after_s": opts["replace_after"],
    }
    if opts["rate"] is not None or opts["find_max"]:
        if opts["events"] is not None:
            raise InvalidSpec(
                "--events and --rate exclude each other: a steady run sends rate x (warmup + duration) events"
            )
        values.update(
            rate_eps=opts["rate"] if opts["rate"] is not None else 1000,
            duration_s=opts["duration"] or (FIND_MAX_DURATION_S if opts["find_max"] else SPEC["duration_s"]),
            warmup_s=opts["warmup"],
        )
    elif opts["events"] is None:
        values["events"] = SPEC["events"]
    return values


def _positive_int(name: str, value: str) -> int:
    if not str(value).isdigit() or int(value) < 1:
        raise InvalidSpec(f"{name} must be a whole number from 1, got {value!r}")
    return int(value)


def _slo(opts) -> float:
    try:
        slo = float(opts["slo_p99_ms"])
    except (TypeError, ValueError):
        raise InvalidSpec(
            f"--find-max needs --slo-p99-ms, a positive number of ms, got {opts['slo_p99_ms']!r}"
        ) from None
    if slo <= 0:
        raise InvalidSpec(f"--slo-p99-ms must be a positive number of ms, got {opts['slo_p99_ms']!r}")
    return slo


class _ProgressBar:
    """A one-line bar on a terminal, redrawn at most ten times a second."""

    def __init__(self, stream, width: int = 30) -> None:
        self.stream, self.width, self.last = stream, width, 0.0
        self.began = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        filled = int(self.width * done / total) if total else self.width
        rate = done / (now - self.began) if now > self.began else 0.0
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done:,}/{total:,} events  {rate:,.0f}/s")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\n")
        self.stream.flush()
