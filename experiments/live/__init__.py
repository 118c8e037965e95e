"""The live dashboard: its pages (``views``, ``urls``, ``data_urls``), its websockets
(``consumers``, ``routing``), the source that decides what a socket is sent (``source``), and
the executor's side of the Redis live path (``publisher``, a receiver of
``experiments.signals``). Imports the services, the selectors and the models.
"""
