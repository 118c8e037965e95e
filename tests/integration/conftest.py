"""The end-to-end suite's fixture: ``stack``, the product running as a user runs it
(``tests/support/stack.py``), one per module."""

from __future__ import annotations

import uuid

import pytest

from tests.support.servers import redis_url
from tests.support.stack import Stack, free_port, running


@pytest.fixture(scope="module")
def stack(request, tmp_path_factory):
    """One running stack for the module (starting one takes seconds): each test defines its own
    experiment, and a test that kills the cluster starts a new one. The module's ``stack`` mark
    shapes it:

    - ``web`` (default true): a daphne web server too, and a logged-in staff session;
    - ``env``: variables for every process of the stack;
    - ``redis``: the tests' Redis server must answer (skip, or fail under ``CI=true``, if not);
    - ``hosts``: the names of load hosts started beside it, waited for until each answered;
    - ``own_metrics``: a metrics folder and a cluster metrics port of its own, reset first.

    Parametrised indirectly with a live path (``"database"`` or ``"redis"``, kept as
    ``stack.live_path``): following the stored samples (the default), or channels-redis (the
    executor publishes each sample to the run's group, under a channel prefix of its own).

    A module whose tests each need a stack of their own (a fresh database, network namespaces)
    overrides it with a function-scoped one over the same ``running()``."""
    mark = request.node.get_closest_marker("stack")
    options = dict(mark.kwargs) if mark else {}
    live_path = getattr(request, "param", None)
    if options.get("redis"):
        redis_url()
    stack = Stack(tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2]), web=options.get("web", True))
    stack.env.update(options.get("env", {}))
    if live_path == "redis":
        stack.env.update(
            IMQ_CHANNEL_REDIS_URL=redis_url("channels-redis"),
            IMQ_CHANNEL_PREFIX=f"imq-live-test-{uuid.uuid4().hex[:8]}",
        )
    stack.live_path = live_path
    if options.get("own_metrics"):
        stack.env["IMQ_METRICS_DIR"] = str(stack.folder / "metrics")  # the stack's own figures only
        stack.env["IMQ_CLUSTER_METRICS_PORT"] = str(free_port())
        stack.manage("metrics_reset")
    hosts = dict.fromkeys(options.get("hosts", ""), {})
    with running(stack, hosts=hosts, what=f"{len(hosts)} hosts to answer") as started:
        yield started
