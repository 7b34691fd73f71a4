"""rtml's app package: the ``rtml`` CLI, the demo and the simulated product traffic, on top of every stage."""

import core  # noqa: F401  (pins prometheus_client's value mode first, see core/__init__.py)
