"""`rtml simulate`: seeded history to Parquet and/or a live transaction stream to Kafka."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta

from core.errors import UserFacingError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from streaming.simulation.scenarios import SCENARIO_NAMES

    g = parser.add_argument_group("population")
    g.add_argument("--users", type=int, default=2000, help="card holders (default 2000)")
    g.add_argument("--merchants", type=int, default=300, help="merchants (default 300)")
    g.add_argument("--seed", type=int, default=42, help="random seed: same seed and options, same data (default 42)")
    h = parser.add_argument_group("history (Parquet under the data dir)")
    h.add_argument("--history", action=argparse.BooleanOptionalAction, default=True, help="write history (default on)")
    h.add_argument("--days", type=int, default=14, help="days of history (default 14)")
    h.add_argument("--start", help="history start, ISO date/time UTC (default: midnight UTC DAYS days ago)")
    h.add_argument("--data-dir", help="output folder or s3://bucket/prefix (default: RTML_DATA_DIR)")
    live = parser.add_argument_group("live stream (Kafka)")
    live.add_argument(
        "--replay",
        action="store_true",
        help="send the history's transactions to Kafka with their original event times (after writing it)",
    )
    live.add_argument("--replay-rate", type=float, help="pace the replay (events/s; default: as fast as possible)")
    live.add_argument("--live", action="store_true", help="stream live transactions to Kafka (after the history)")
    live.add_argument(
        "--rate",
        type=_rate,
        default=20.0,
        help="target events per second, or 'natural': the population's habit rate, so per-user windows look "
        "like the history (users * ~7/day / 86400) (default 20)",
    )
    live.add_argument("--duration", type=float, default=60.0, help="seconds to stream; 0 = until Ctrl-C (default 60)")
    live.add_argument("--max-events", type=int, help="stop after this many events (overrides --duration if smaller)")
    live.add_argument("--topic", help="transactions topic (default: the feature repo's event topic)")
    live.add_argument("--labels", action=argparse.BooleanOptionalAction, default=True, help="send delayed labels")
    live.add_argument(
        "--label-delay-scale",
        type=float,
        default=None,
        help="multiply label delays (hours-days) by this in live mode (default 1/1440: a day -> a minute)",
    )
    live.add_argument(
        "--label-tail", choices=["flush", "wait", "drop"], default="flush", help="labels not yet due at the end"
    )
    d = parser.add_argument_group("drift")
    d.add_argument("--scenario", choices=SCENARIO_NAMES, help="drift scenario to switch on")
    d.add_argument(
        "--scenario-at",
        help="when it starts: ISO date/time UTC, or +MINUTES after the live start (with --live) "
        "or after the history start (history only). Default: +0",
    )
    d.add_argument("--scenario-strength", type=float, default=1.0, help="scenario strength (default 1.0)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _rate(text: str) -> float | str:
    if text == "natural":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or 'natural'") from None


def _parse_time(text: str, what: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserFacingError(
            f"{what}: {text!r} is not an ISO date/time (e.g. 2026-11-01 or 2026-11-01T12:00Z)"
        ) from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _scenario_start(text: str | None, anchor: datetime) -> datetime:
    if not text:
        return anchor
    if text.startswith("+"):
        try:
            return anchor + timedelta(minutes=float(text[1:]))
        except ValueError:
            raise UserFacingError(f"--scenario-at: {text!r} is not +MINUTES") from None
    return _parse_time(text, "--scenario-at")


def run(args: argparse.Namespace) -> int:
    from infra.commands import quiet_client_logs
    from streaming.simulation.history import parse_start
    from streaming.simulation.scenarios import Scenario

    quiet_client_logs()
    if not args.history and not args.live and not args.replay:
        raise UserFacingError("nothing to do: give --history (default), --replay and/or --live")
    for name, value in (("--users", args.users), ("--merchants", args.merchants), ("--days", args.days)):
        if value < 1:
            raise UserFacingError(f"{name} must be >= 1")
    if (args.rate != "natural" and args.rate <= 0) or args.duration < 0:
        raise UserFacingError("--rate must be > 0 and --duration >= 0")
    if args.scenario_at and not args.scenario:
        raise UserFacingError("--scenario-at needs --scenario NAME")
    progress = not args.no_progress
    history_start = parse_start(_parse_time(args.start, "--start") if args.start else None, args.days)
    live_start = datetime.now(UTC)
    scenario = None
    if args.scenario:
        anchor = live_start if args.live else history_start
        try:
            scenario = Scenario(args.scenario, _scenario_start(args.scenario_at, anchor), args.scenario_strength)
        except ValueError as exc:
            raise UserFacingError(str(exc)) from None

    out: dict = {}
    if args.history:
        from streaming.simulation.history import simulate_history

        summary = simulate_history(
            start=history_start,
            days=args.days,
            n_users=args.users,
            n_merchants=args.merchants,
            seed=args.seed,
            data_dir=args.data_dir,
            scenario=scenario,
            progress=progress,
        )
        out["history"] = summary.to_dict()
        if not args.json:
            print(
                f"history: {summary.n_transactions:,} transactions, {summary.n_fraud:,} fraud "
                f"({summary.fraud_rate:.2%}), {summary.start} .. {summary.end}, "
                f"{summary.n_users:,} users ({summary.n_user_snapshots:,} profile rows), "
                f"{summary.n_merchants:,} merchants, {summary.elapsed_s:.1f} s"
            )
            for name, path in summary.paths.items():
                print(f"  {name:<13}{path}")
    if args.replay:
        from streaming.producer import replay_history

        replay = replay_history(
            data_dir=args.data_dir, topic=args.topic, rate_per_s=args.replay_rate, progress=progress
        )
        out["replay"] = replay.to_dict()
        if not args.json:
            print(
                f"replay: {replay.events:,} history events from {replay.files} files to '{replay.topic}' "
                f"({replay.achieved_rate:,.0f}/s), {replay.first_event} .. {replay.last_event}"
            )
    if args.live:
        from streaming.producer import stream_live
        from streaming.simulation.live import DEFAULT_LABEL_DELAY_SCALE, natural_rate_per_s

        natural = natural_rate_per_s(args.users, args.merchants, args.seed)
        if args.rate == "natural":
            args.rate = natural
        elif args.rate > 10 * natural and not args.json:
            print(
                f"note: at {args.rate:g} events/s each of the {args.users:,} users transacts ~{args.rate / natural:,.0f}x "
                f"as often as in the history (habit rate of this population: {natural:.3g}/s); "
                "use more --users for history-like per-user windows"
            )

        report = stream_live(
            args.rate,
            duration_s=args.duration or None,
            max_events=args.max_events,
            seed=args.seed,
            n_users=args.users,
            n_merchants=args.merchants,
            scenario=scenario,
            topic=args.topic,
            start_time=datetime.now(UTC),
            label_delay_scale=DEFAULT_LABEL_DELAY_SCALE if args.label_delay_scale is None else args.label_delay_scale,
            send_labels=args.labels,
            label_tail=args.label_tail,
            progress=progress,
        )
        out["live"] = report.to_dict()
        if not args.json:
            print(
                f"live: {report.events:,} events to '{report.topic}' ({report.fraud:,} fraud), "
                f"target {report.target_rate:,.0f}/s, achieved {report.achieved_rate:,.0f}/s, "
                f"max lag {report.max_lag_s:.3f} s, {report.first_event} .. {report.last_event}"
                + (" (interrupted)" if report.interrupted else "")
            )
            if report.labels_topic:
                print(
                    f"  labels: {report.labels_sent:,} to '{report.labels_topic}' "
                    f"({report.labels_flushed_early:,} sent before due, {report.labels_dropped:,} dropped)"
                )
    if scenario is not None and not args.json:
        print(f"scenario: {scenario.name} from {scenario.starts_at.isoformat()} (strength {scenario.strength})")
    if args.json:
        print(json.dumps(out, indent=2))
    return 0
