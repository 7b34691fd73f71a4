"""The `bentoml` CLI with a Prometheus multiprocess directory of this server's own.

BentoML keeps its workers' metrics in ``$BENTOML_HOME/prometheus_multiproc_dir`` and wipes that directory
whenever a server starts, so two servers sharing a model store (the service and the baseline, or a
second instance) would erase each other's metrics. ``RTML_PROMETHEUS_DIR`` gives each server its own
(the same override BentoML's pytest plugin uses).
"""

from __future__ import annotations

import sys


def main() -> int:
    from core.settings import settings

    directory = settings().serving.prometheus_dir
    if directory:
        from bentoml._internal.configuration.containers import BentoMLContainer

        BentoMLContainer.prometheus_multiproc_dir.set(directory)
    from bentoml_cli.cli import cli

    sys.argv[0] = "bentoml"
    return cli()


if __name__ == "__main__":
    sys.exit(main())
