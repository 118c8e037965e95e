"""The app's configuration: at start-up it connects the receivers of ``experiments.signals``
and, in a load host's cluster, starts the host's heartbeat."""

import multiprocessing
import sys

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "experiments"
    verbose_name = "Queue experiments"

    def ready(self) -> None:
        # imported here, not at the top: these modules import the models, which Django allows
        # only once the app registry is ready
        from experiments import signals
        from experiments.hosts.heartbeat import host_beat_start
        from experiments.live import publisher
        from experiments.prometheus import metrics

        # Prometheus first, then the live path, as the services called them before the signals
        for receivers in (metrics, publisher):
            signals.sample_stored.connect(receivers.on_sample_stored, dispatch_uid=f"{receivers.__name__}.sample")
            signals.run_ended.connect(receivers.on_run_ended, dispatch_uid=f"{receivers.__name__}.ended")
        # a load host's qcluster (IMQ_HOST_NAME set) writes its heartbeat from its main process
        # only: not from the processes it forks, nor from any other command
        if "qcluster" in sys.argv[1:2] and multiprocessing.parent_process() is None:
            host_beat_start()
