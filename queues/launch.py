"""One entry point to run a spec: an in-process approach or a backend built from its URL.

Used by the Django services, the benchmarks and a worker machine alike, so that all of them
resolve aliases, URLs and options the same way.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from queues.approaches import APPROACHES, run_approach
from queues.backends import BACKENDS, Backend, backend_class
from queues.errors import UnknownBackend
from queues.metrics import Sample
from queues.runner import Faults, Runner, RunResult
from queues.workload import WorkloadSpec


def known_aliases() -> list[str]:
    return sorted(BACKENDS) + sorted(APPROACHES)


def check_alias(alias: str) -> str:
    """``"backend"`` or ``"approach"``; raises ``UnknownBackend`` with a "did you mean" hint."""
    if alias in APPROACHES:
        return "approach"
    if alias in BACKENDS:
        return "backend"
    close = difflib.get_close_matches(alias, known_aliases(), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownBackend(f"unknown backend {alias!r}{hint}; choose one of: {', '.join(known_aliases())}")


def build_backend(
    alias: str, *, urls: Mapping[str, str] | None = None, options: Mapping[str, Any] | None = None,
    namespace: str = "imq",
) -> Backend:
    """The backend ``alias`` pointed at ``urls[cls.url_setting]``, or its default URL."""
    cls = backend_class(alias)
    url = (urls or {}).get(cls.url_setting or "", "") or cls.default_url
    return cls(url=url, namespace=namespace, **dict(options or {}))


def run_spec(
    spec: WorkloadSpec,
    *,
    run_id: str,
    urls: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    on_sample: Callable[[Sample], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    faults: Faults | None = None,
) -> RunResult:
    """Run ``spec`` to the end. Raises ``BackendUnavailable`` if the server is unreachable at
    the start; any later failure comes back as a result with status ``failed``."""
    if check_alias(spec.backend) == "approach":
        return run_approach(spec, run_id=run_id, on_sample=on_sample, on_progress=on_progress)
    backend = build_backend(spec.backend, urls=urls, options=options)
    runner = Runner(
        spec, backend, run_id=run_id, on_sample=on_sample, on_progress=on_progress,
        should_cancel=should_cancel, faults=faults,
    )
    return runner.run()
