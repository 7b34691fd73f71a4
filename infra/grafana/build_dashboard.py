"""Build the Grafana dashboard ``infra/grafana/dashboards/rtml.json`` (serving, stream job, drift, model).

    python infra/grafana/build_dashboard.py          # rewrite the JSON
    python infra/grafana/build_dashboard.py --check  # exit 1 if the JSON is out of date

Panels query Prometheus through the dashboard variable ``datasource``, so the same JSON works with the
provisioned datasource of docker-compose (uid ``prometheus``) and with any Prometheus in Kubernetes.
Metric names are those the code exports; tests/deploy checks every one of them against the sources.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent / "dashboards" / "rtml.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
PREDICT = 'endpoint=~"/predict|/predict_batch"'


def _target(expr: str, legend: str, ref: str) -> dict:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def timeseries(title: str, targets: list[tuple[str, str]], unit: str = "short", description: str = "", **custom) -> dict:
    panel = {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {
            "defaults": {"unit": unit, "custom": {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, **custom}},
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }
    return panel


def stat(title: str, expr: str, unit: str = "short", description: str = "", thresholds: list[tuple[float | None, str]] | None = None) -> dict:
    steps = [{"color": color, "value": value} for value, color in (thresholds or [(None, "green")])]
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "area", "textMode": "auto"},
        "targets": [_target(expr, title, "A")],
    }


def row(title: str) -> dict:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def quantiles(metric: str, selector: str, by: str = "", qs: tuple[float, ...] = (0.5, 0.99)) -> list[tuple[str, str]]:
    group = f"le{', ' + by if by else ''}"
    out = []
    for q in qs:
        legend = f"p{int(q * 100)}" + (f" {{{{{by}}}}}" if by else "")
        out.append((f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))", legend))
    return out


def panels() -> list[dict]:
    """Rows of panels, top to bottom; each list entry is (panel, width)."""
    layout: list[tuple[dict, int, int]] = [
        (row("Prediction service"), 24, 1),
        (stat("Requests / s", f"sum(rate(bentoml_service_request_total{{{PREDICT}}}[$__rate_interval]))", "reqps"), 6, 4),
        (stat("p99 latency /predict", "histogram_quantile(0.99, sum by (le) (rate(bentoml_service_request_duration_seconds_bucket"
              '{endpoint="/predict"}[$__rate_interval])))', "s",
              thresholds=[(None, "green"), (0.05, "orange"), (0.1, "red")]), 6, 4),
        (stat("Error ratio (5xx)", f'sum(rate(bentoml_service_request_total{{{PREDICT},http_response_code=~"5.."}}[$__rate_interval])) '
              f"/ clamp_min(sum(rate(bentoml_service_request_total{{{PREDICT}}}[$__rate_interval])), 1e-9)", "percentunit",
              thresholds=[(None, "green"), (0.001, "orange"), (0.01, "red")]), 6, 4),
        (stat("Redis errors / s", "sum(rate(rtml_serving_redis_errors_total[$__rate_interval]))", "reqps",
              thresholds=[(None, "green"), (0.001, "red")]), 6, 4),
        (timeseries("Request latency (p50, p99) by endpoint",
                    quantiles("bentoml_service_request_duration_seconds", PREDICT, by="endpoint"), "s",
                    "BentoML's request histogram, whole request inside the service."), 12, 8),
        (timeseries("Request rate by endpoint and status",
                    [(f"sum by (endpoint, http_response_code) (rate(bentoml_service_request_total{{{PREDICT}}}[$__rate_interval]))",
                      "{{endpoint}} {{http_response_code}}")], "reqps",
                    "400 = malformed request, 422 = invalid field, 503 = online store unavailable."), 12, 8),
        (timeseries("Serving stages (p50, p99)", quantiles("rtml_serving_stage_seconds", "", by="stage"), "s",
                    "feature_fetch = one pipelined Redis round trip; on_demand = request-time features; predict = XGBoost."), 12, 8),
        (timeseries("Missing online features / s",
                    [("sum by (feature) (rate(rtml_serving_missing_features_total[$__rate_interval]))", "{{feature}}")], "reqps",
                    "Features not in Redis at request time (unknown entity or expired row)."), 12, 8),
        (timeseries("Score distribution (p50, p90, p99)", quantiles("rtml_serving_score", "", qs=(0.5, 0.9, 0.99)), "percentunit"), 12, 8),
        (timeseries("Prediction log drops / s",
                    [("sum by (reason) (rate(rtml_serving_prediction_log_dropped_total[$__rate_interval]))", "{{reason}}")], "reqps",
                    "Predictions not sent to the predictions topic (queue full, Kafka send failed)."), 12, 8),
        (row("Features: stream job"), 24, 1),
        (timeseries("Feature freshness",
                    [("max(rtml_stream_feature_freshness_seconds)", "stream job: now - newest feature event time"),
                     *[(e, f"served feature age {legend}") for e, legend in quantiles("rtml_serving_feature_age_seconds", "")]],
                    "s", "How old the online features are: at the stream job's last write, and as used by predictions."), 12, 8),
        (timeseries("Events read and rows written / s",
                    [("sum(rate(rtml_stream_events_read_total[$__rate_interval]))", "events read"),
                     ("sum by (view, store) (rate(rtml_stream_rows_written_total[$__rate_interval]))", "{{view}} -> {{store}}")],
                    "reqps"), 12, 8),
        (timeseries("Dead-letter queue and late events / s",
                    [("sum by (reason) (rate(rtml_stream_dlq_total[$__rate_interval]))", "DLQ {{reason}}"),
                     ("sum by (kind) (rate(rtml_stream_late_events_total[$__rate_interval]))", "late {{kind}}")], "reqps",
                    "Malformed events go to the transactions_dlq topic with the reason; nothing is dropped silently."), 12, 8),
        (timeseries("Micro-batch duration (p50, p99)", quantiles("rtml_stream_batch_duration_seconds", ""), "s"), 12, 8),
        (timeseries("Consumer lag (messages)",
                    [("sum(rtml_stream_consumer_lag)", "stream job (transactions)"),
                     ("sum by (topic) (rtml_monitor_consumer_lag)", "monitor {{topic}}")], "short",
                    "Messages behind the end of the topic, summed over partitions."), 24, 8),
        (row("Drift and model quality: monitor"), 24, 1),
        (stat("Drift share", "max(rtml_drift_share)", "percentunit",
              thresholds=[(None, "green"), (0.3, "orange"), (0.5, "red")]), 6, 4),
        (stat("Prediction drift score", "max(rtml_prediction_drift_score)", "short"), 6, 4),
        (stat("Window size (rows)", "max(rtml_monitor_window_size)", "short"), 6, 4),
        (stat("Monitor events / s", "sum(rtml_monitor_events_per_second)", "reqps"), 6, 4),
        (timeseries("Drift score by feature", [("max by (feature) (rtml_drift_score)", "{{feature}}")], "short",
                    "Per-feature drift statistic of the last window (see rtml_drift_threshold for the cut-off)."), 12, 8),
        (timeseries("Drifted features", [("max by (feature) (rtml_drift_detected)", "{{feature}}")], "short",
                    "1 = the feature drifted in the last window.", drawStyle="bars"), 12, 8),
        (timeseries("Drift share and prediction drift",
                    [("max(rtml_drift_share)", "drift share"), ("max(rtml_prediction_drift_score)", "prediction drift score")],
                    "short"), 12, 8),
        (timeseries("Missing value rate by feature", [("max by (feature) (rtml_missing_value_rate)", "{{feature}}")],
                    "percentunit"), 12, 8),
        (timeseries("Model precision, recall, PR-AUC (labelled predictions)",
                    [("max(rtml_model_precision)", "precision"), ("max(rtml_model_recall)", "recall"),
                     ("max(rtml_model_pr_auc)", "PR-AUC")], "percentunit",
                    "Rolling, on predictions whose labels arrived on the labels topic."), 12, 8),
        (timeseries("Retraining",
                    [("sum by (reason) (increase(rtml_retrain_triggered_total[1h]))", "triggered: {{reason}}"),
                     ("sum by (decision) (increase(rtml_retrain_decisions_total[1h]))", "decision: {{decision}}")],
                    "short", "Per hour.", drawStyle="bars"), 12, 8),
    ]
    out, x, y, next_id = [], 0, 0, 1
    line_height = 0
    for panel, width, height in layout:
        if x + width > 24 or panel["type"] == "row":
            x, y = 0, y + line_height
            line_height = 0
        panel = {"id": next_id, "gridPos": {"h": height, "w": width, "x": x, "y": y}, **panel}
        next_id += 1
        out.append(panel)
        x += width
        line_height = max(line_height, height)
    return out


def dashboard() -> dict:
    return {
        "uid": "rtml-overview",
        "title": "rtml: real-time fraud scoring",
        "description": "Prediction service, stream job, feature freshness, drift and model quality.",
        "tags": ["rtml"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
                 "current": {"selected": False, "text": "Prometheus", "value": "prometheus"}, "hide": 0,
                 "refresh": 1, "options": [], "regex": ""}
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check that the JSON is up to date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is out of date: run python infra/grafana/build_dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
