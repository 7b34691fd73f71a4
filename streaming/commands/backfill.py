"""`rtml backfill --start --end`: recompute stream features from history (Spark batch), then re-materialize Redis."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from core.errors import UserFacingError


def _when(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 date/time: {text!r}") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", type=_when, required=True, help="first event time (ISO-8601, UTC if no zone)")
    parser.add_argument("--end", type=_when, default=None, help="end, exclusive (default: now)")
    parser.add_argument("--master", default=None, help="Spark master (default: settings)")
    parser.add_argument("--no-materialize", action="store_true", help="only write the offline store")
    parser.add_argument("--view", action="append", default=None, help="only this stream view (repeatable)")


def run(args: argparse.Namespace) -> int:
    from streaming.backfill import run_backfill

    end = args.end or datetime.now(UTC)
    if end <= args.start:
        raise UserFacingError("--end must be after --start")
    result = run_backfill(args.start, end, master=args.master, materialize=not args.no_materialize,
                          views=tuple(args.view) if args.view else None)
    rate = result.events_read / result.compute_seconds if result.compute_seconds else 0.0
    print(f"rtml backfill: {result.events_read} events {args.start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M}, "
          f"rows {result.rows_written}, compute {result.compute_seconds:.1f}s ({rate:,.0f} events/s)"
          + (f", materialized {result.materialized} in {result.materialize_seconds:.1f}s" if not args.no_materialize else ""))
    return 0
