"""`rtml down`: stop what `rtml up` started for the current settings (by pid); never external services."""

from __future__ import annotations

import argparse

from infra.commands import quiet_client_logs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing")


def run(args: argparse.Namespace) -> int:
    quiet_client_logs()
    from infra.stack import down

    down(progress=not args.quiet)
    return 0
