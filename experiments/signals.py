"""What happens to a run that other parts of the app react to, as Django signals.

The services send them; the live path (``experiments.live.publisher``) and Prometheus
(``experiments.prometheus.metrics``) receive them, connected in ``ExperimentsConfig.ready()``.
So the services never call up into the edges that show their results, and a new listener
(a log, a webhook) is one receiver more, not a change to the services.

- ``sample_stored(sender=Run, run, row, sample)``: an interval sample of ``run`` was stored as
  ``row`` (a ``Sample``); ``sample`` is the engine's ``IntervalSample`` it came from.
- ``run_ended(sender=Run, run, counted)``: ``run`` ended (succeeded, failed or cancelled) and is
  stored as it ended; ``counted`` is true for the one call that ended it (false when someone else
  had already ended it, so that a total counts each run once).
"""

from django.dispatch import Signal

sample_stored = Signal()
run_ended = Signal()
