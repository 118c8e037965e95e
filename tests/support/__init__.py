"""What the tests share, apart from their fixtures (those are in the ``conftest.py`` files):

- ``servers``: the real servers and programs a test needs, and the rule for a missing one
  (skip locally, fail under ``CI=true``);
- ``messages``: driving a backend by hand (messages, batches received, sizes per backend);
- ``runs``: runs through the engine in the test's own process;
- ``rows``: what a run stores, for rows a test writes by hand;
- ``doubles``: deliberately faulty backends;
- ``faults``: making a server cut one run's connections;
- ``waiting``: ``wait_until``, the one way a test waits;
- ``commands``: ``manage()``, the one way a test runs a command, and migrated databases;
- ``stack``: the product as a user runs it (web server, cluster, load hosts);
- ``netns``: network namespaces for load hosts.

Test modules import from here, never from one another.
"""
