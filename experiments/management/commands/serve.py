"""``python manage.py serve [--port 8000]``: the control room in one command (``dev.py serve``)."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import connection, connections

from experiments.execution.control_room import STOP_TIMEOUT_S, ControlRoom, ServerFailed, port_taken
from experiments.execution.interrupts import Interrupts
from experiments.management.base import BaseCommand, CommandError
from experiments.prometheus.metrics import metrics_reset
from experiments.services.accounts import LOCAL_SUPERUSER, superuser_create_local, superuser_names, user_exists

DEFAULT_PORT = 8000


class Command(BaseCommand):
    help = (
        "Open the control room: migrate the database, empty the metrics folder of gone processes, create "
        f"the superuser {LOCAL_SUPERUSER} on first use (a random password printed once, or asked for on a "
        "terminal), start the django-q2 cluster (qcluster) and the web server (daphne) on 127.0.0.1, and "
        "print the admin's and the live dashboard's URLs once it answers. Ctrl-C or SIGTERM stops both: a "
        "run that is executing is cancelled and stored as cancelled. If one of them dies, the other is "
        "stopped and the command exits 1, naming its log."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the web server's port (default 8000)")
        parser.add_argument(
            "--log-dir",
            type=Path,
            help="where the cluster's and the web server's logs go (default: imqueue-serve-PORT in the temp folder)",
        )

    def handle(self, *args, **opts):
        port = opts["port"]
        if not 1 <= port <= 65535:
            raise CommandError(f"--port must be a port number from 1 to 65535, got {port}")
        if port_taken(port):
            raise CommandError(f"port {port} on 127.0.0.1 is in use (another serve?): choose another with --port")
        log_dir = opts["log_dir"] or Path(tempfile.gettempdir()) / f"imqueue-serve-{port}"
        call_command("migrate", interactive=False, verbosity=0)
        database = settings.DATABASES["default"]
        self._line("database", f"{connection.vendor} {database['NAME']} (migrated)")
        self._line("metrics", f"{metrics_reset()} files of gone processes removed from {settings.IMQ_METRICS_DIR}")
        self._login()
        connections.close_all()  # this process only waits from here: no connection kept open for hours
        room = ControlRoom(port=port, log_dir=log_dir)
        self._line("logs", f"{room.cluster.log}, {room.web.log}")
        interrupts = Interrupts()
        with interrupts.caught():  # the first SIGINT/SIGTERM only sets a flag: the stop below runs in order
            try:
                self._serve(room, interrupts)
            except KeyboardInterrupt:  # a second Ctrl-C: no waiting
                stopped = room.kill()
                names = " and ".join(server.title for server in stopped.killed) or "nothing left"
                raise CommandError(
                    f"interrupted twice: killed {names} at once{_failed(stopped.failed_runs)}",
                    returncode=interrupts.exit_status,
                ) from None

    def _serve(self, room: ControlRoom, interrupts: Interrupts) -> None:
        self.stdout.write("starting the cluster and the web server ...")
        room.start()
        failure = None
        try:
            if room.wait_for_web(interrupted=interrupts):
                self._line("admin", room.url("/admin/"))
                self._line("dashboard", room.url("/dashboard/"))
                self.stdout.write(
                    "Ctrl-C stops both; a run that is executing is cancelled and stored as cancelled "
                    "(Ctrl-C twice: at once)"
                )
                room.watch(interrupted=interrupts)
        except ServerFailed as exc:
            failure = str(exc)
            self.stderr.write(f"{failure}. Stopping the other ...")
        if interrupts():
            self.stdout.write(f"stopping ({interrupts()}) ...")
        stopped = room.stop(on_cancel=self._cancelling)
        for server in stopped.killed:
            self.stderr.write(
                f"what was left of {server.title} after the stop (at most {STOP_TIMEOUT_S:g} s) was killed; "
                f"its log: {server.log}"
            )
        if failure:
            raise CommandError(failure + _failed(stopped.failed_runs))
        if stopped.killed:
            raise CommandError("the control room did not stop cleanly (above)" + _failed(stopped.failed_runs))
        self.stdout.write("stopped: the cluster and the web server exited, and no process of theirs is left")

    def _cancelling(self, run_id: int, pid: int) -> None:
        self.stdout.write(f"run {run_id} is executing: cancelling it (SIGTERM to its executor, pid {pid}) ...")

    def _login(self) -> None:
        """Create the local superuser on first use: never over an existing user."""
        change = f"{_manage()} changepassword"
        if names := superuser_names():
            self._line("login", f"as {' or '.join(names)} (forgot the password? {change} {names[0]})")
            return
        if user_exists(username=LOCAL_SUPERUSER):
            raise CommandError(
                f"there is no superuser, and the user {LOCAL_SUPERUSER!r} is not one: "
                f"make one with {_manage()} createsuperuser"
            )
        if sys.stdin.isatty():
            self.stdout.write(f"no superuser yet: choose a password for {LOCAL_SUPERUSER!r}, the control room's login")
            call_command("createsuperuser", username=LOCAL_SUPERUSER, email="", interactive=True)
            self._line("login", f"as {LOCAL_SUPERUSER} (forgot the password? {change} {LOCAL_SUPERUSER})")
            return
        password = superuser_create_local(username=LOCAL_SUPERUSER)
        self._line(
            "login",
            f"created the superuser {LOCAL_SUPERUSER} with the password {password} "
            f"(printed only this once, here; change it with {change} {LOCAL_SUPERUSER})",
        )

    def _line(self, label: str, text: str) -> None:
        self.stdout.write(f"{label:<10} {text}")


def _failed(run_ids: list[int]) -> str:
    """What a message adds about the runs marked failed because their executor was killed."""
    return f"; stored as failed: run {', '.join(map(str, run_ids))}" if run_ids else ""


def _manage() -> str:
    """How to run ``manage.py`` from the project's folder with this Python: the venv's, as
    ``dev.py`` makes it, or whichever runs this command."""
    venv = settings.BASE_DIR / ".venv"
    return ".venv/bin/python manage.py" if Path(sys.prefix).resolve() == venv.resolve() else "python manage.py"
