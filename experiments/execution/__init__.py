"""What executes runs in a process of its own: the django-q2 tasks a cluster worker runs
(``tasks``), one run at a time per machine (``run_lock``) and the signal handlers of a command
that runs one (``interrupts``); and the control room that ``manage.py serve`` starts and stops,
a cluster beside a web server (``control_room``). Imports the services.
"""
