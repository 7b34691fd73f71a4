"""CLI commands of the local stack: `rtml up`, `rtml down`, `rtml status`."""

import logging


def quiet_client_logs() -> None:
    """kafka-python logs every connection at INFO; the stack commands print their own progress."""
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.WARNING)
