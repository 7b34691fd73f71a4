"""Prometheus metrics of the prediction service (registered through BentoML, so they appear on its
``/metrics`` next to BentoML's own request metrics, across workers)."""

from __future__ import annotations

import bentoml

STAGE_BUCKETS = (0.00005, 0.0001, 0.0002, 0.0003, 0.0005, 0.00075, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
AGE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400, 365 * 86400)
SCORE_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)

stage_seconds = bentoml.metrics.Histogram(
    name="rtml_serving_stage_seconds",
    documentation="Time per serving stage of one request (feature_fetch, on_demand, predict).",
    labelnames=["stage"],
    buckets=STAGE_BUCKETS,
)
missing_features_total = bentoml.metrics.Counter(
    name="rtml_serving_missing_features_total",
    documentation="Features not found in the online store (unknown entity), by feature.",
    labelnames=["feature"],
)
feature_age_seconds = bentoml.metrics.Histogram(
    name="rtml_serving_feature_age_seconds",
    documentation="Age of the oldest online feature row used by a prediction (now - feature event time).",
    buckets=AGE_BUCKETS,
)
score = bentoml.metrics.Histogram(
    name="rtml_serving_score",
    documentation="Model scores served.",
    buckets=SCORE_BUCKETS,
)
redis_errors_total = bentoml.metrics.Counter(
    name="rtml_serving_redis_errors_total",
    documentation="Requests answered 503 because Redis was unreachable or too slow.",
)
prediction_log_dropped_total = bentoml.metrics.Counter(
    name="rtml_serving_prediction_log_dropped_total",
    documentation="Prediction log records dropped (queue full or Kafka send failed).",
    labelnames=["reason"],
)

# ---- per variant (production / challenger during a rollout) ---------------------------------------
VARIANT_LABELS = ["variant", "model_version"]
variant_latency_seconds = bentoml.metrics.Histogram(
    name="rtml_serving_variant_latency_seconds",
    documentation="Model scoring time per prediction, by variant (shadow: per row of a batched call).",
    labelnames=VARIANT_LABELS,
    buckets=STAGE_BUCKETS,
)
variant_score = bentoml.metrics.Histogram(
    name="rtml_serving_variant_score",
    documentation="Scores by variant (shadow scores included: logged, never returned).",
    labelnames=VARIANT_LABELS,
    buckets=SCORE_BUCKETS,
)
variant_decisions_total = bentoml.metrics.Counter(
    name="rtml_serving_variant_decisions_total",
    documentation="Decisions by variant (decision rate = fraud / all).",
    labelnames=[*VARIANT_LABELS, "decision"],
)
variant_errors_total = bentoml.metrics.Counter(
    name="rtml_serving_variant_errors_total",
    documentation="Predictions a variant failed to make (a failing challenger never fails a request).",
    labelnames=VARIANT_LABELS,
)
reloads_total = bentoml.metrics.Counter(
    name="rtml_serving_reloads_total",
    documentation="Deployment changes picked up from the registry without a restart, by result (ok, failed).",
    labelnames=["result"],
)
