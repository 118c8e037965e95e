"""Who may use which control: the model permissions each one needs, decided here once for the
admin's actions and buttons and for the live page's controls alike.

Being staff lets a user in (the admin, the live pages); what a user may then *do* follows what
the control writes, as Django's model permissions name it:

- launching runs (the Launch and Sweep actions, Re-run, the live page's Launch again) creates
  runs: ``experiments.add_run``. The series that groups a launch's runs is part of the launch;
- cloning an experiment creates an experiment: ``experiments.add_experiment``;
- cancelling a run changes it: ``experiments.change_run``;
- cancelling a series changes it and cancels its queued runs: ``experiments.change_runseries``
  and ``experiments.change_run``.

A view-only staff user (``view_*`` permissions only) sees every page and no control: the admin
does not offer the actions nor show the buttons, and a POST sent anyway is refused.
Superusers have every permission.
"""

from __future__ import annotations

from typing import Any

#: Each control's permissions, all needed (``User.has_perms``).
LAUNCH = ("experiments.add_run",)
CLONE = ("experiments.add_experiment",)
CANCEL_RUN = ("experiments.change_run",)
CANCEL_SERIES = ("experiments.change_runseries", "experiments.change_run")


def user_may(user: Any, control: tuple[str, ...]) -> bool:
    """Whether ``user`` has every permission of ``control`` (an inactive user has none)."""
    return bool(user.has_perms(control))
