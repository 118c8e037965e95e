"""Writes: everything the lab does, whoever asks (the admin, the live page, a command, a cluster
task). Keyword-only functions named ``<entity>_<action>``: runs and series (``runs``), launches
from the control room (``launches``), the leftovers of killed runs (``cleanup``), the delivery
scorecard (``scorecard``), the backends' status (``backend_status``) and the control room's
login (``accounts``). They import the models, the selectors, ``experiments.hosts.heartbeat``,
``experiments.reports`` and ``queues``; what a stored sample or a run's end means to the live
page and to Prometheus reaches them through ``experiments.signals``, never by a call upward.
"""
