"""The ``imqueue_*`` Prometheus metrics served on ``/metrics``, fed by ``experiments.signals``
receivers and by the executor. Imports the models' values only through the signals' arguments.
"""
