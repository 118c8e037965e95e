"""The worker processes of a run and their supervision: what a producer and a consumer do in their
own process (``worker``), the typed reports they send the runner (``reports``), how a worker
dies with its runner (``lifeline``), how processes are told alive or dead (``processes``) and
how the runner spawns, watches, replaces and stops them (``supervision``). Workers drive a
backend through the interface in ``queues.backends.base`` only as a type; they import
``queues.measurement``, ``queues.workload.spec`` and ``queues.errors``.
"""
