"""`rtml train` (work in progress: the training pipeline lands in the next commits)."""

from __future__ import annotations

import argparse

from rtml.errors import UserFacingError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    raise UserFacingError("rtml train is not implemented yet")
