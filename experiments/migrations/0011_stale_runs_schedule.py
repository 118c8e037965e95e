"""The stale-run sweep as a django-q2 schedule: the cluster marks failed, every minute, the runs
whose executor died (``experiments.execution.tasks.stale_runs_task``), so that no page has to
write while it is read.

A data migration rather than code at the cluster's start: ``migrate`` runs on every install and
upgrade anyway, once per database, so the row exists wherever a cluster can run, without a
start-up hook in another app's command; the row is created (or put back as it should be) by
name, so running it again changes nothing; and it shows in django-q2's admin (Schedules) like
any other. Its ``cluster`` stays empty: django-q2 gives a schedule without a cluster to the
default cluster only, never to a load host's qcluster (``IMQ_HOST_NAME``), whose process check
would look at the wrong machine.
"""

from django.db import migrations
from django.utils import timezone

NAME = "imqueue: mark stale runs failed"
FUNC = "experiments.execution.tasks.stale_runs_task"


def schedule_create(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.using(schema_editor.connection.alias).update_or_create(name=NAME, defaults={
        "func": FUNC, "schedule_type": "I", "minutes": 1, "repeats": -1, "cluster": None,  # "I": every N minutes
        "next_run": timezone.now(),
    })


def schedule_delete(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.using(schema_editor.connection.alias).filter(name=NAME).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("experiments", "0010_distributed_runs"),
        ("django_q", "0014_schedule_cluster"),  # the schedule's cluster field: empty is the default cluster
    ]

    operations = [migrations.RunPython(schedule_create, schedule_delete)]
