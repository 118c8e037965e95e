"""Load hosts over the database: each host's heartbeat and clock offset (``heartbeat``) and the
transport between a distributed run's coordinator and its hosts (``distribution``), which drives
``queues.distributed``. Imports the models and ``queues``.
"""
