"""`rtml materialize`: load the latest offline feature values into Redis."""

from __future__ import annotations

import argparse
from datetime import datetime


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--views", nargs="*", help="feature views (default: all online views with offline data)")
    parser.add_argument("--start", type=datetime.fromisoformat, help="earliest event time (default: all history)")
    parser.add_argument("--end", type=datetime.fromisoformat, help="latest event time (default: now)")
    parser.add_argument(
        "--incremental",
        action="store_true",
        help="only what is newer than the last run (fast, but skips data Redis lost; the default full run repairs it)",
    )


def run(args: argparse.Namespace) -> int:
    from rtml.materialize import materialize

    views = materialize(args.views, args.start, args.end, args.incremental)
    print(f"materialized: {', '.join(views) if views else 'nothing (no offline data yet: run `rtml simulate` first)'}")
    return 0
