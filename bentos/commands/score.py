"""`rtml score --start --end [--model TAG]`: batch-score historical events (see :mod:`bentos.batch_score`)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", required=True, help="first event time (ISO-8601, UTC when naive)")
    parser.add_argument("--end", required=True, help="end of the range (exclusive)")
    parser.add_argument("--model", default=None, help="model tag (default: the registry's production model)")
    parser.add_argument(
        "--engine", choices=("auto", "duckdb", "sorted", "feast"), default="auto",
        help="point-in-time join: auto (default: sorted for integer keys, else duckdb), duckdb, sorted, "
        "or feast (the configured offline store; Spark with RTML_OFFLINE_STORE=spark)",
    )
    parser.add_argument("--out", type=Path, default=None, help="output Parquet (default <state_dir>/scores/VERSION-START-END.parquet)")


def run(args: argparse.Namespace) -> int:
    from bentos.batch_score import score_range

    r = score_range(args.start, args.end, model=args.model, engine=args.engine, out=args.out)
    steps = ", ".join(f"{k} {v:.2f} s" for k, v in r.seconds.items())
    print(f"scored {r.rows} events with {r.model} ({r.variant}) in {sum(r.seconds.values()):.2f} s ({r.rows_per_s:,.0f} rows/s: {steps})")
    print(f"-> {r.path}")
    return 0
