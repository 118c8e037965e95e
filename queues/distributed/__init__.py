"""A run split over load hosts: the ``plan`` of each host's share, the hosts' ``reports``, the
``coordinator`` that merges them and the loop a load ``host`` runs. The transport between
machines is the caller's (the Django app passes rows of its database); this package imports
``queues.run`` and below.
"""
