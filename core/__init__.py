"""rtml: real-time ML serving on a feature store.

Importing Feast's metrics module (done lazily by materialize and online reads) sets
PROMETHEUS_MULTIPROC_DIR in os.environ, which flips prometheus_client into multi-process mode for
every metric created afterwards in this process (values shared through mmap files, counters of
two instances with one name added together). prometheus_client picks its mode once, at import, so
import it here first: a process keeps the mode it was started with (BentoML workers get
multi-process mode from their launcher, everything else in-process values).

Feast is imported without typeguard's import-time instrumentation (:mod:`core.feast_import`): 3x faster.
"""

import prometheus_client.values  # noqa: F401  (pins the metric value mode, see above)

from core.feast_import import skip_typeguard

skip_typeguard()
