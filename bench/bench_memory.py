"""Benchmark of the in-memory engine (``memory-mp``) on this machine.

    .venv/bin/python bench/bench_memory.py [--events 1e6] [--repeat 5]

1. Drain time of ``memory-mp`` (1 producer, 1 consumer, one event a message, 1000 messages a
   call, full ledger and latency recording) against ``bench/reference_mp.py`` (a plain sum over
   a multiprocessing queue), alternating, median of ``--repeat``. Target: within 2x. Measured
   twice: the ``Runner`` in this process, and through ``manage.py runexperiment --json`` (its
   ``duration_s``: Django, the cancel probe and the database writes in the runner's process),
   the reference, the runner and the command taking turns.
2. Wall time and peak memory (the sum of PSS over the command's process tree) of the whole
   ``manage.py runexperiment --json`` for 1e6 events, Django start-up and database writes
   included. Targets: under 3 s, under 300 MB.
3. One event a call (``events_per_message=1, batch=1``): events/s, and a cProfile of the
   producer and the consumer saying where the time goes.

Prints a table and writes ``bench/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import reference_mp  # noqa: E402
from queues.backends.memory import MultiprocessBackend  # noqa: E402
from queues.run.runner import Runner  # noqa: E402
from queues.workload.spec import WorkloadSpec  # noqa: E402


def engine_drain_s(events: int, **fields) -> dict:
    spec = WorkloadSpec(backend="memory-mp", events=events, **fields)
    result = Runner(spec, MultiprocessBackend(), run_id=uuid.uuid4().hex[:8]).run()
    assert result.summary["verdict"] == "exact", result.summary
    return result.summary


def tree_pss_kb(root_pid: int) -> int:
    """Sum of PSS over ``root_pid`` and its descendants (shared pages counted once overall)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def command_run(events: int, env: dict, *, sample_memory: bool = True) -> dict:
    """Wall time, peak PSS and drain time (``duration_s``) of one ``runexperiment --json``
    command. Without ``sample_memory`` nothing walks /proc meanwhile: on two cores that walk
    would slow the drain being timed."""
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runexperiment", "--events", str(events), "--json", "--experiment", "bench"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_pss_kb(proc.pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    if sample_memory:
        sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - began
    if sample_memory:
        sampler.join()
    if proc.returncode:
        raise SystemExit(f"runexperiment failed: {err}")
    summary = json.loads(out)
    assert summary["verdict"] == "exact", summary
    return {
        "wall_s": round(wall, 3),
        "peak_mb": round(peak[0] / 1024, 1) if sample_memory else None,
        "drain_s": summary["duration_s"],
        "verdict": summary["verdict"],
    }


def profile_one_event_a_call(events: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        spec = WorkloadSpec(backend="memory-mp", events=events, batch=1)
        result = Runner(spec, MultiprocessBackend(), run_id="prof", profile_dir=tmp).run()
        tops = {}
        for role in ("producer", "consumer"):
            stats = pstats.Stats(f"{tmp}/{role}-0.prof")
            total = stats.total_tt
            rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:6]
            tops[role] = [
                {
                    "function": f"{Path(f).name}:{line}({name})",
                    "self_s": round(st[2], 3),
                    "share": round(st[2] / total, 3),
                }
                for (f, line, name), st in rows
            ]
    return {"events": events, "events_per_s": result.summary["throughput_eps"], "profile": tops}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=float, default=1e6)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--one-a-call-events", type=float, default=1e5)
    args = parser.parse_args()
    events = int(args.events)

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, DATABASE_URL=f"sqlite:///{tmp}/bench.sqlite3")
        subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
        reference, engine, command = [], [], []
        for _ in range(args.repeat):  # take turns, so all three see the same machine conditions
            reference.append(reference_mp.run(events)["seconds"])
            engine.append(engine_drain_s(events)["duration_s"])
            command.append(command_run(events, env, sample_memory=False)["drain_s"])
        commands = [command_run(events, env) for _ in range(3)]
    ref_s, eng_s, cmd_s = statistics.median(reference), statistics.median(engine), statistics.median(command)
    wall = statistics.median(c["wall_s"] for c in commands)
    peak = max(c["peak_mb"] for c in commands)

    one = profile_one_event_a_call(int(args.one_a_call_events))
    one_unprofiled = engine_drain_s(int(args.one_a_call_events), batch=1)["throughput_eps"]

    results = {
        "events": events,
        "reference_s": reference,
        "engine_drain_s": engine,
        "reference_median_s": ref_s,
        "engine_median_s": eng_s,
        "ratio": round(eng_s / ref_s, 2),
        "command_drain_s": command,
        "command_drain_median_s": cmd_s,
        "command_ratio": round(cmd_s / ref_s, 2),
        "command": commands,
        "command_wall_median_s": wall,
        "command_peak_mb": peak,
        "one_event_a_call": {"events_per_s": one_unprofiled, "profiled": one},
    }
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "memory.json").write_text(json.dumps(results, indent=2))

    print(f"memory-mp, {events:,} events, 1 producer -> 1 consumer, median of {args.repeat}")
    print(f"  reference (mp.Queue, lists of 1000, plain sum)  {ref_s:.3f} s")
    print(
        f"  engine drain (ledger + latency on)              {eng_s:.3f} s   ratio {eng_s / ref_s:.2f}x (target <= 2x)"
    )
    print(
        f"  runexperiment --json drain (duration_s)         {cmd_s:.3f} s   ratio {cmd_s / ref_s:.2f}x (target <= 2x)"
    )
    print(
        f"  runexperiment --json, whole command             {wall:.2f} s wall (target < 3 s), "
        f"peak {peak:.0f} MB PSS (target < 300)"
    )
    print(f"  one event a call (batch=1), {int(args.one_a_call_events):,} events      {one_unprofiled:,.0f} events/s")
    for role, rows in one["profile"].items():
        print(f"    {role} self time, top functions (profiled run):")
        for row in rows:
            print(f"      {row['share']:6.1%}  {row['function']}")


if __name__ == "__main__":
    main()
