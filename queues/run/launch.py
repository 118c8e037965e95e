"""One entry point to run a spec: an in-process approach or a backend built from its URL.

Used by the Django services, the benchmarks and a worker machine alike, so that all of them
resolve aliases, URLs and options the same way.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from queues.backends import BACKENDS, Backend, backend_class
from queues.backends.options import OptionValue, options_resolve
from queues.errors import InvalidSpec, UnknownBackend
from queues.faults.servers import private_server
from queues.measurement.histograms import IntervalSample
from queues.run.approaches import APPROACHES, run_approach
from queues.run.runner import Faults, Runner, RunResult
from queues.text import suggest
from queues.workload.faults import RESTART_SERVER
from queues.workload.spec import WorkloadSpec

log = logging.getLogger(__name__)

#: The namespace of every run's queue (``<namespace>.<run id>``): what ``cleanup`` looks under.
NAMESPACE = "imq"


def known_aliases() -> list[str]:
    return sorted(BACKENDS) + sorted(APPROACHES)


def check_alias(alias: str) -> str:
    """``"backend"`` or ``"approach"``; raises ``UnknownBackend`` with a "did you mean" hint."""
    if alias in APPROACHES:
        return "approach"
    if alias in BACKENDS:
        return "backend"
    raise UnknownBackend(
        f"unknown backend {alias!r}{suggest(alias, known_aliases())}; choose one of: {', '.join(known_aliases())}"
    )


def resolve_options(alias: str, options: Mapping[str, Any] | None = None) -> dict[str, OptionValue]:
    """Every option of ``alias`` with ``options`` applied, defaults filled in; no I/O.

    Raises ``UnknownBackend``, or ``InvalidSpec`` for an option the backend does not declare,
    a value it does not allow, or any option at all on an in-process approach (they have none:
    a knob that would be silently ignored is an error).
    """
    if check_alias(alias) == "approach":
        if options:
            raise InvalidSpec(
                f"the {alias} approach takes no options (got {', '.join(sorted(options))}): "
                "options belong to queue backends",
                field="options",
            )
        return {}
    return options_resolve(backend_class(alias).options, options or {}, owner=alias)


def build_backend(
    alias: str,
    *,
    urls: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    namespace: str = NAMESPACE,
) -> Backend:
    """The backend ``alias`` pointed at ``urls[cls.url_setting]``, or its default URL (no I/O
    yet: call ``connect``)."""
    return backend_class(alias)(url=server_url(alias, urls), namespace=namespace, **dict(options or {}))


@contextlib.contextmanager
def _private_server(spec: WorkloadSpec) -> Iterator[Any]:
    """The private server a ``restart-server`` fault needs (``queues.faults.servers``), started for
    the run and closed after it whatever happens; ``None`` for a run without one. Never the
    shared server: restarting that would break every other user's runs."""
    restart = next((f for f in spec.fault_specs if f.kind == RESTART_SERVER), None)
    if restart is None:
        yield None
        return
    server = private_server(spec.backend, persistence=restart.persistence)
    try:
        server.start()
        yield server
    finally:
        server.close()


def server_url(alias: str, urls: Mapping[str, str] | None = None) -> str:
    """Where backend ``alias`` finds its server: ``urls[<its url_setting>]`` (the settings'
    ``IMQ_URLS``, or ``os.environ`` for a script without Django), else its default URL."""
    cls = backend_class(alias)
    return (urls or {}).get(cls.url_setting or "", "") or cls.default_url


def run_spec(
    spec: WorkloadSpec,
    *,
    run_id: str,
    urls: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
    on_sample: Callable[[IntervalSample], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    faults: Faults | None = None,
) -> RunResult:
    """Run ``spec`` to the end. Raises ``BackendUnavailable`` if the server is unreachable at
    the start, ``InvalidSpec`` for options the backend does not take; any later failure comes
    back as a result with status ``failed``.

    The result's ``environment`` and ``summary`` record every option in force under
    ``options`` (defaults included), the same way for every backend and approach.
    """
    if check_alias(spec.backend) == "approach":
        resolved = resolve_options(spec.backend, options)
        result = run_approach(
            spec, run_id=run_id, on_sample=on_sample, on_progress=on_progress, should_cancel=should_cancel
        )
    else:
        with _private_server(spec) as server:
            if server is not None:  # the run's own server, which a restart-server fault restarts
                urls = {**(urls or {}), backend_class(spec.backend).url_setting or "": server.url}
            backend = build_backend(spec.backend, urls=urls, options=options)
            resolved = dict(backend.option_values)
            runner = Runner(
                spec,
                backend,
                run_id=run_id,
                on_sample=on_sample,
                on_progress=on_progress,
                should_cancel=should_cancel,
                faults=faults,
                server=server,
            )
            log.info(
                "run %s: %s at %s, %d events, %d producer(s) -> %d consumer(s)",
                run_id,
                spec.backend,
                backend.describe_url(),
                spec.events,
                spec.producers,
                spec.consumers,
            )
            result = runner.run()
            log.info("run %s %s%s", run_id, result.status, f": {result.error}" if result.error else "")
            if server is not None:
                result.environment["private_server"] = {
                    "kind": server.kind,
                    "persistence": server.persistence,
                    "durable": server.durable,
                }
    result.environment["options"] = resolved
    result.summary["options"] = dict(resolved)
    return result
