"""`rtml monitor`: drift monitoring of the predictions stream, with Prometheus metrics, alerts and a
retraining trigger. Stop with Ctrl-C (offsets of evaluated windows are committed)."""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import threading

from core.contracts import domain_topics
from core.errors import UserFacingError
from core.settings import settings

log = logging.getLogger(__name__)


def _kv(text: str, cast=str) -> dict:
    """``a=x,b=y`` -> {"a": x, "b": y}."""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected name=value, got {part!r}")
        out[key.strip()] = cast(value.strip())
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    w = parser.add_argument_group("windows")
    w.add_argument("--window-size", type=int, default=5000, help="events per window (default 5000)")
    w.add_argument("--window-minutes", type=float, default=None, help="also close a window after this much event time")
    w.add_argument("--window-mode", choices=["tumbling", "sliding"], default="tumbling")
    w.add_argument("--slide", type=int, default=None, help="sliding windows: evaluate every N events (default size/5)")
    w.add_argument("--min-window", type=int, default=500, help="smallest window evaluated (time-closed or idle)")
    d = parser.add_argument_group("drift")
    d.add_argument("--num-method", default="wasserstein", help="Evidently drift method of continuous features")
    d.add_argument("--cat-method", default="jensenshannon", help="Evidently drift method of discrete features")
    d.add_argument(
        "--threshold", type=float, default=None, help="drift threshold of every feature (default: the method's)"
    )
    d.add_argument("--feature-method", type=lambda s: _kv(s), default={}, help="per feature: name=method,...")
    d.add_argument("--feature-threshold", type=lambda s: _kv(s, float), default={}, help="per feature: name=value,...")
    d.add_argument("--score-method", default="wasserstein", help="drift method of the prediction score")
    d.add_argument("--score-threshold", type=float, default=None)
    d.add_argument(
        "--drift-share", type=float, default=0.3, help="share of drifted features that makes a window drifted"
    )
    d.add_argument("--alert-min-features", type=int, default=1, help="drifted features that count for FeatureDrift")
    d.add_argument("--alert-windows", type=int, default=1, help="consecutive such windows before FeatureDrift fires")
    d.add_argument(
        "--no-calibration",
        action="store_true",
        help="ignore the model's calibration (seasonal reference + thresholds measured on its training period)",
    )
    p = parser.add_argument_group("performance (needs labels)")
    p.add_argument("--perf-window", type=int, default=5000, help="labelled predictions in the rolling metrics")
    p.add_argument("--perf-min-labels", type=int, default=500)
    p.add_argument("--min-pr-auc", type=float, default=None, help="default: 0.7 x the model's offline PR-AUC, or 0.2")
    p.add_argument("--min-recall", type=float, default=None)
    r = parser.add_argument_group("retraining")
    r.add_argument(
        "--retrain-command", default=None, help="command to run (default $RTML_RETRAIN_COMMAND or `rtml train`)"
    )
    r.add_argument("--retrain-drift-share", type=float, default=0.3, help="drift share above which a window counts")
    r.add_argument(
        "--retrain-windows", type=int, default=3, help="consecutive counting windows that trigger retraining"
    )
    r.add_argument("--retrain-every-hours", type=float, default=None, help="also retrain on this schedule")
    r.add_argument("--retrain-cooldown-minutes", type=float, default=360.0)
    r.add_argument("--no-retrain", action="store_true", help="decide and count, but never start retraining")
    o = parser.add_argument_group("output")
    o.add_argument("--metrics-port", type=int, default=settings().monitor.metrics_port,
                   help="default RTML_MONITOR_METRICS_PORT or 9109")
    o.add_argument("--group", default="rtml-monitor", help="Kafka consumer group")
    o.add_argument("--predictions-topic", default=None, help="default: settings().topics.predictions")
    o.add_argument("--labels-topic", default=None, help="default: the feature repo's label topic")
    o.add_argument("--alerts-topic", default=None, help="default: settings().topics.alerts")
    o.add_argument("--no-labels", action="store_true", help="do not consume the labels topic")
    o.add_argument("--reports-keep", type=int, default=20, help="drifted-window reports kept")
    o.add_argument("--latest-report-minutes", type=float, default=5.0, help="rewrite latest.html at most this often")
    o.add_argument(
        "--drift-report-minutes",
        type=float,
        default=1.0,
        help="persistent drift: a drifted-window report at most this often",
    )
    o.add_argument("--no-reports", action="store_true")
    o.add_argument("--check-crcs", action="store_true", help="verify Kafka record CRCs (pure Python: ~7x slower)")
    o.add_argument("--max-windows", type=int, default=None, help="stop after N windows")
    o.add_argument(
        "--exit-when-idle", type=float, default=None, metavar="S", help="stop after S seconds without messages"
    )


def build_config(args: argparse.Namespace):
    from core.feature_refs import label_definition
    from monitoring.drift import DriftConfig
    from monitoring.monitor import MonitorConfig
    from monitoring.retrain import RetrainConfig, default_command
    from monitoring.windows import WindowSpec

    try:
        window = WindowSpec(
            size=args.window_size,
            seconds=args.window_minutes * 60 if args.window_minutes else None,
            mode=args.window_mode,
            slide=args.slide,
            min_events=min(args.min_window, args.window_size),
        )
    except ValueError as exc:
        raise UserFacingError(str(exc)) from None
    drift = DriftConfig(
        num_method=args.num_method,
        cat_method=args.cat_method,
        threshold=args.threshold,
        per_feature_method=args.feature_method,
        per_feature_threshold=args.feature_threshold,
        score_method=args.score_method,
        score_threshold=args.score_threshold,
        drift_share=args.drift_share,
    )
    retrain = RetrainConfig(
        drift_share=args.retrain_drift_share,
        consecutive=args.retrain_windows,
        every_s=args.retrain_every_hours * 3600 if args.retrain_every_hours else None,
        cooldown_s=args.retrain_cooldown_minutes * 60,
        command=shlex.split(args.retrain_command) if args.retrain_command else default_command(),
        enabled=not args.no_retrain,
    )
    labels = label_definition()
    return MonitorConfig(
        label_key=labels.event_key,
        label_column=labels.label,
        window=window,
        drift=drift,
        retrain=retrain,
        alert_min_features=args.alert_min_features,
        alert_windows=args.alert_windows,
        perf_window=args.perf_window,
        perf_min_labels=args.perf_min_labels,
        min_pr_auc=args.min_pr_auc,
        min_recall=args.min_recall,
        reports_keep=args.reports_keep,
        latest_report_every_s=args.latest_report_minutes * 60,
        render_reports=not args.no_reports,
        drift_report_every_s=args.drift_report_minutes * 60,
    )


def export_freshness(metrics) -> None:
    """The views' declared freshness SLOs, and the age of what batch writers (materialize) wrote."""
    from core.feature_repo import repo_contents
    from core.freshness import FreshnessGauge, FreshnessMarks, view_slos

    try:
        rc = repo_contents()
        slos = view_slos([*rc.feature_views, *rc.stream_feature_views])
    except Exception as exc:  # noqa: BLE001 - drift monitoring goes on without the SLO gauges
        log.warning("no freshness SLOs exported: cannot read the feature repo (%s)", exc)
        return
    FreshnessGauge(metrics.registry, slos, source="materialize", marks=FreshnessMarks())


def run(args: argparse.Namespace) -> int:
    from evidently.legacy.calculations.stattests.registry import StatTestNotFoundError

    from core.kafka_io import check_broker, ensure_topics, make_consumer, make_producer
    from monitoring.alerts import AlertSink
    from monitoring.metrics import MonitorMetrics
    from monitoring.monitor import Monitor
    from monitoring.reference import registry_loaders

    cfg = settings()
    config = build_config(args)
    check_broker()
    predictions = args.predictions_topic or cfg.topics.predictions
    labels = args.labels_topic or domain_topics().labels
    alerts = args.alerts_topic or cfg.topics.alerts
    ensure_topics([predictions, labels, alerts], role="monitor")
    metrics = MonitorMetrics()
    export_freshness(metrics)
    sink = AlertSink(None, alerts, metrics=metrics)
    try:  # load the reference first: no port or client is opened for a monitor that cannot start
        # each record's model picks its reference: serving may pin a model the registry no longer calls production
        loader, by_tag = registry_loaders(window_rows=args.window_size, calibrated=not args.no_calibration)
        monitor = Monitor(config, loader, state_dir=cfg.state_dir, metrics=metrics, sink=sink, model_loader=by_tag)
    except (StatTestNotFoundError, ValueError) as exc:
        raise UserFacingError(f"bad drift configuration: {exc}") from None
    try:
        server = metrics.serve(args.metrics_port)
    except OSError as exc:
        raise UserFacingError(f"cannot serve metrics on port {args.metrics_port}: {exc} (use --metrics-port)") from None
    producer = sink.producer = make_producer(role="monitor")
    subscribed = [predictions] + ([] if args.no_labels else [labels])
    consumer = make_consumer(
        subscribed,
        args.group,
        role="monitor",
        check_crcs=args.check_crcs,
        max_poll_records=5000,
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info(
        "monitoring %s (group %s) against model %s; metrics on :%d/metrics; reports in %s",
        ", ".join(subscribed),
        args.group,
        monitor.reference.model,
        args.metrics_port,
        monitor.reports.directory,
    )
    try:
        windows = monitor.run(
            consumer,
            predictions,
            None if args.no_labels else labels,
            stop,
            max_windows=args.max_windows,
            idle_exit_s=args.exit_when_idle,
        )
    except KeyboardInterrupt:
        windows = len(monitor.results)
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=5)
        server.shutdown()
        monitor.retrain.stop(timeout_s=0)
    print(f"rtml monitor: {windows} window(s) evaluated, {monitor.malformed} malformed message(s) skipped")
    return 0
