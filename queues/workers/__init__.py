"""The worker processes of a run and their supervision: what a producer (``producer``) and a consumer
(``consumer``, counting with ``counting``) do in their own process, started at ``entry`` with a
``context`` and a ``link`` to the backend that reconnects; the typed reports they send the runner
(``reports``) over their ``channel``; how a worker dies with its runner (``lifeline``), how
processes are told alive or dead (``processes``) and how the runner spawns, watches, replaces and
stops them (``supervision``). Workers drive a backend through the interface in
``queues.backends.base`` only as a type; they import ``queues.measurement``,
``queues.workload.spec`` and ``queues.errors``.
"""
