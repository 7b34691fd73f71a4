"""Prometheus metrics of the stream job (names are a contract with monitoring/alerting)."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from core.freshness import FreshnessGauge

_FRESHNESS_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class StreamMetrics:
    """The job's metrics in one registry (the default one unless a test passes its own)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        r = registry or REGISTRY
        self.registry = r
        self.events_read = Counter("rtml_stream_events_read_total", "Kafka records read by the stream job.", registry=r)
        self.dlq = Counter("rtml_stream_dlq_total", "Records sent to the dead-letter topic.", ["reason"], registry=r)
        self.late = Counter(
            "rtml_stream_late_events_total", "Out-of-order events: within the watermark (used) or dropped.", ["kind"],
            registry=r,
        )
        self.rows_written = Counter(
            "rtml_stream_rows_written_total", "Feature rows written.", ["view", "store"], registry=r
        )
        self.batch_duration = Histogram(
            "rtml_stream_batch_duration_seconds", "Time to process one micro-batch.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0), registry=r,
        )
        self.freshness = Gauge(
            "rtml_stream_feature_freshness_seconds", "Online write time minus the newest event time of the last batch.",
            registry=r,
        )
        self.freshness_hist = Histogram(
            "rtml_stream_feature_freshness_seconds_hist", "Online write time minus newest event time, per batch.",
            buckets=_FRESHNESS_BUCKETS, registry=r,
        )
        self.view_freshness = FreshnessGauge(r)  # age per view, growing while nothing is written
        self.consumer_lag = Gauge(
            "rtml_stream_consumer_lag", "Records in Kafka not yet processed, per partition.", ["partition"], registry=r
        )
        for kind in ("within_watermark", "dropped"):
            self.late.labels(kind=kind)

    def serve(self, port: int) -> None:
        """Expose /metrics on ``port`` (0 = do not serve)."""
        if port:
            start_http_server(port, addr="0.0.0.0", registry=self.registry)
