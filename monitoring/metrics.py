"""Prometheus metrics of the drift monitor, in their own registry (one per monitor instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class MonitorMetrics:
    """All gauges and counters ``rtml monitor`` exports (names are the alert rules' contract)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.drift_score = Gauge(
            "rtml_drift_score", "Drift score of a feature in the last window (method-specific)", ["feature"], registry=r
        )
        self.drift_threshold = Gauge("rtml_drift_threshold", "Drift threshold of a feature", ["feature"], registry=r)
        self.drift_detected = Gauge(
            "rtml_drift_detected", "1 if the feature drifted in the last window", ["feature"], registry=r
        )
        self.drift_share = Gauge("rtml_drift_share", "Share of drifted features in the last window", registry=r)
        self.dataset_drift = Gauge(
            "rtml_dataset_drift", "1 if the drift share reached the configured share", registry=r
        )
        self.prediction_drift_score = Gauge(
            "rtml_prediction_drift_score", "Drift score of the model score in the last window", registry=r
        )
        self.prediction_drift_detected = Gauge(
            "rtml_prediction_drift_detected", "1 if the model score drifted in the last window", registry=r
        )
        self.missing_value_rate = Gauge(
            "rtml_missing_value_rate",
            "Share of missing values of a feature in the last window",
            ["feature"],
            registry=r,
        )
        self.window_size = Gauge("rtml_monitor_window_size", "Rows in the last evaluated window", registry=r)
        self.window_eval_seconds = Gauge(
            "rtml_monitor_window_eval_seconds", "Seconds spent computing the last window's drift", registry=r
        )
        self.windows_total = Counter("rtml_monitor_windows", "Windows evaluated", registry=r)
        self.last_window_timestamp = Gauge(
            "rtml_monitor_last_window_timestamp_seconds", "Wall time of the last evaluated window", registry=r
        )
        self.events_per_second = Gauge(
            "rtml_monitor_events_per_second", "Prediction messages consumed per second (recent)", registry=r
        )
        self.events_total = Counter("rtml_monitor_events", "Messages consumed", ["topic"], registry=r)
        self.consumer_lag = Gauge(
            "rtml_monitor_consumer_lag", "Messages behind the end of the partition", ["topic", "partition"], registry=r
        )
        self.malformed_total = Counter("rtml_monitor_malformed", "Malformed messages skipped", ["topic"], registry=r)
        self.precision = Gauge("rtml_model_precision", "Rolling precision on labelled predictions", registry=r)
        self.recall = Gauge("rtml_model_recall", "Rolling recall on labelled predictions", registry=r)
        self.pr_auc = Gauge(
            "rtml_model_pr_auc", "Rolling PR-AUC (average precision) on labelled predictions", registry=r
        )
        self.pr_auc_floor = Gauge(
            "rtml_model_pr_auc_floor", "PR-AUC below which PerformanceDecay fires (model-specific)", registry=r
        )
        self.performance_low = Gauge(
            "rtml_model_performance_low", "1 while the rolling performance is below its floor", registry=r
        )
        self.labelled_rows = Gauge(
            "rtml_model_labelled_rows", "Labelled predictions in the rolling performance window", registry=r
        )
        self.alerts_total = Counter("rtml_monitor_alerts", "Alert events sent", ["alert", "severity"], registry=r)
        self.alert_delivery_failures = Counter(
            "rtml_monitor_alert_delivery_failures", "Alert deliveries that failed", ["sink"], registry=r
        )
        self.retrain_triggered = Counter(
            "rtml_retrain_triggered", "Retraining runs started, by reason", ["reason"], registry=r
        )
        self.retrain_decisions = Counter(
            "rtml_retrain_decisions", "Retraining decisions, by decision", ["decision"], registry=r
        )
        self.retrain_runs = Counter(
            "rtml_retrain_runs", "Finished retraining runs, by outcome", ["outcome"], registry=r
        )
        self.reports_written = Counter("rtml_monitor_reports", "HTML drift reports written", ["kind"], registry=r)
        self.reports_skipped = Counter(
            "rtml_monitor_reports_skipped", "Drifted windows without their own report (rate limit)", registry=r
        )
        for decision in ("started", "cooldown", "running"):
            self.retrain_decisions.labels(decision=decision)

    def serve(self, port: int, addr: str = "0.0.0.0"):
        """Expose ``/metrics`` on ``port``; returns the server (``shutdown()`` stops it)."""
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of a sample (tests and logs)."""
        return self.registry.get_sample_value(name, labels or {})
