"""The entry point of a worker process or thread: its role's loop (``queues.workers.producer`` or
``queues.workers.consumer``), an error reported to the runner instead of raised, a forked worker
bound to its runner's life, and an optional cProfile of it (bench/).
"""

from __future__ import annotations

import traceback
from typing import Any

from queues.workers.channel import RunnerGone
from queues.workers.consumer import consume
from queues.workers.context import WorkerContext
from queues.workers.lifeline import bind_to_runner
from queues.workers.producer import produce
from queues.workers.reports import PRODUCER, WorkerFailed


def run_worker(role: str, index: int, ctx: WorkerContext) -> None:
    """Entry point of a worker process or thread; reports an error instead of raising."""
    work = produce if role == PRODUCER else consume
    try:
        if ctx.profile_dir:
            _profiled(work, index, ctx, f"{ctx.profile_dir}/{role}-{index}.prof")
        else:
            work(index, ctx)
    except RunnerGone:
        return  # nobody to report to; what this worker held returns to the queue as it closes
    except BaseException as exc:  # noqa: BLE001 - reported to the runner, which fails the run
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        try:
            ctx.channel.send(WorkerFailed(role, index, detail))
        except RunnerGone:
            return


def run_worker_process(role: str, index: int, ctx: WorkerContext, runner_pid: int, inherited: list[Any]) -> None:
    """Entry point of a forked worker: bound to its runner's life (``queues.workers.lifeline``), then
    ``run_worker``. ``inherited`` are the report pipe readers fork copied into it."""
    bind_to_runner(runner_pid, inherited)
    run_worker(role, index, ctx)


def _profiled(work: Any, index: int, ctx: WorkerContext, path: str) -> None:
    import cProfile  # bench/'s profiled runs only: 1.4 ms at every worker's start otherwise

    profile = cProfile.Profile()
    try:
        profile.runcall(work, index, ctx)
    finally:
        profile.dump_stats(path)
