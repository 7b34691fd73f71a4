"""`rtml apply`: register feature_repo/ definitions (`feast apply` with rtml's settings)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", action="store_true", help="only show what would change (`feast plan`)")


def run(args: argparse.Namespace) -> int:
    from core.feast_store import apply_repo, plan_repo

    if args.plan:
        plan_repo()
    else:
        apply_repo()
    return 0
