import multiprocessing
import sys

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "experiments"
    verbose_name = "Queue experiments"

    def ready(self) -> None:
        # a load host's qcluster (IMQ_HOST_NAME set) writes its heartbeat from its main process
        # only: not from the processes it forks, nor from any other command
        if "qcluster" in sys.argv[1:2] and multiprocessing.parent_process() is None:
            from experiments.hosts.heartbeat import host_beat_start

            host_beat_start()
