"""spark-submit entry point of the rtml image: ``spark-submit .../spark_main.py stream [options]`` runs
``rtml stream [options]`` inside the driver that spark-submit (or the Spark operator) started.

A file of its own rather than ``rtml/cli.py``: running a file as a script puts its folder first on
``sys.path``, and ``rtml/kafka.py`` would then shadow the ``kafka`` package.
"""

import sys

from rtml.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
