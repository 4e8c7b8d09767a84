"""Example data for Nightkeeper, not part of the framework: the credit-application simulator (``simulator``, the
example the shipped ``nightkeeper.yaml`` describes) and the non-credit scenario worlds (``worlds``), each built to
exercise one way self-healing can fail. The demo, the commands ``nightkeeper simulate``, ``world`` and
``bootstrap``, the tests and the benchmarks draw their data from here; no framework module imports it."""
