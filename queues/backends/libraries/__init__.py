"""The Python task libraries as backends (issue 14): Celery, Dramatiq, RQ, huey, procrastinate.

One module per library, each importing its library only when its backend is used (the registry
imports the module lazily); ``handoff`` is what they share: the library's worker inside the
imqueue consumer. django-q2's backends need Django, which ``queues`` never imports: they are in
``queues/backends/libraries/djangoq_backend.py``. Installed with ``pip install -e '.[libraries]'``.
"""
