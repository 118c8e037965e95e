"""The Python task libraries as backends: Celery, Dramatiq, RQ, huey, procrastinate,
django-q2.

One module per library, each importing its library only when its backend is used (the registry
imports the module lazily); ``base`` is what they all share: the library's worker inside the
imqueue consumer. The runner's control connection is shared by broker: ``redis_keys`` for the
libraries on Redis, ``amqp_control`` for those on RabbitMQ, ``postgres_control`` for those on
PostgreSQL. ``djangoq_backend`` is the one module of ``queues`` that imports Django (django-q2 is
a Django app). Installed with ``pip install -e '.[libraries]'``.
"""
