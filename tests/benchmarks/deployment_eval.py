"""Monitoring evaluated like a real deployment: 14 days of training history, then 14 days of
time-ordered traffic with daily and weekly cycles (the simulator), one incident at a time.

The model (a small XGBoost) is trained on the training period; the monitor is calibrated once on it
(:func:`monitoring.calibration.calibrate`, lineage from the feature repo) and then runs at DEFAULT
settings over the 14 evaluation days in windows of 5000 predictions; labels join as they arrive
(simulated label delays: median 20 h for legit, 40 h for fraud). Each incident starts on evaluation
day 7 at 10:00 UTC. Measured:

- false alarms per clean day: alert events fired (any alert) over the 14 clean days / 14;
- detection delay per incident: windows closed from the incident's start up to and including the
  first alert (1 = the window in which it started); the concept shift (labels only) is reported
  separately with its label delay, in windows and hours;
- for the stuck stream job also the freshness check (age of the stream views vs their declared SLO,
  evaluated at every window end).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TRAIN_DAYS = 14
EVAL_DAYS = 14
N_USERS = 4000
WINDOW = 5000
INCIDENT_DAY, INCIDENT_HOUR = 7, 10
INCIDENTS: dict[str, dict[str, Any]] = {
    "amount_shift": {"strength": 0.3},  # amounts x1.3
    "merchant_mix": {"strength": 0.5},  # a quarter of legit traffic moves to travel/electronics
    "new_country": {"strength": 0.05},  # 5% of transactions from a never seen country
    "null_feature": {"feature": "credit_limit"},  # broken upstream: the users table loses credit_limit
    "stuck_stream": {},  # the stream job stops writing
    "concept_shift": {"strength": 0.01},  # 1% of legit-looking transactions are fraud (labels only)
}


def _features() -> list[str]:
    from core.feature_refs import ref_names, service_feature_refs

    return ref_names(service_feature_refs())


def run_monitor(frame: pd.DataFrame, reference, features: list[str], window: int = WINDOW) -> dict[str, Any]:
    """Default monitor over ``frame`` (time-ordered: features, score, is_fraud, event/label timestamps)
    in windows of ``window`` predictions."""
    from monitoring.monitor import Monitor, MonitorConfig
    from monitoring.retrain import RetrainConfig
    from monitoring.windows import WindowSpec

    now = [0.0]
    with tempfile.TemporaryDirectory() as tmp:
        mon = Monitor(
            MonitorConfig(window=WindowSpec(size=window), render_reports=False, retrain=RetrainConfig(enabled=False)),
            lambda: reference,
            Path(tmp),
            clock=lambda: now[0],
        )
        matrix = frame[[*features, "score"]].to_numpy(float)
        ts = frame["event_timestamp"].to_numpy(float)
        txn = np.arange(len(frame)).astype(str)
        label_order = np.argsort(frame["label_timestamp"].to_numpy(), kind="stable")
        label_ts = frame["label_timestamp"].to_numpy()[label_order]
        labels = frame["is_fraud"].to_numpy()[label_order]
        next_label = 0
        fired: list[tuple[int, str, float]] = []  # (window, alert, window end)
        summaries: dict[int, str] = {}  # window -> summary of its first FeatureDrift
        eval_s = []
        for k in range(len(frame) // window):
            rows = slice(k * window, (k + 1) * window)
            for i in range(rows.start, rows.stop):
                mon.performance.add_prediction(txn[i], matrix[i, -1])
            end = ts[rows.stop - 1]
            while next_label < len(label_ts) and label_ts[next_label] <= end:
                mon.performance.add_label(txn[label_order[next_label]], int(labels[next_label]))
                next_label += 1
            now[0] = end
            before = len(mon.sink.sent)
            result = mon.process_window(matrix[rows], ts[rows.start], end, ts[rows])
            eval_s.append(result.eval_seconds)
            for alert in mon.sink.sent[before:]:
                if alert.details.get("action") == "fire":
                    fired.append((k + 1, alert.alert, end))
                    if alert.alert == "FeatureDrift":
                        summaries.setdefault(k + 1, alert.summary)
                    if len(fired) <= 3:
                        print(f"    window {k + 1}: {alert.alert}: {alert.summary[:160]}")
        return {
            "windows": len(frame) // window,
            "fired": fired,
            "summaries": summaries,
            "eval_s": eval_s,
            "ends": ts[window - 1 :: window],
        }


def _stream_slo_s() -> float:
    """The declared freshness SLO of the stream views (feature repo tags)."""
    from core.feature_repo import import_definitions
    from core.freshness import freshness_slo_s

    features = import_definitions("features")
    return min(freshness_slo_s(v) for v in (features.user_txn_aggregates, features.merchant_txn_aggregates))


def evaluate(progress: bool = True) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score

    from monitoring.calibration import calibrate
    from monitoring.lineage import repo_lineage
    from monitoring.reference import Reference
    from tests.fixtures.traffic import Incident, day_start, fit_score_model, score, simulate_traffic

    t0 = time.perf_counter()
    features = _features()
    days = TRAIN_DAYS + EVAL_DAYS
    split = day_start(TRAIN_DAYS)
    clean = simulate_traffic(days, N_USERS)
    train = clean[clean["event_timestamp"] < split]
    fit_part = train[train["event_timestamp"] < day_start(TRAIN_DAYS - 3)]
    holdout = train[train["event_timestamp"] >= day_start(TRAIN_DAYS - 3)]
    model = fit_score_model(fit_part, features)
    offline_pr_auc = float(average_precision_score(holdout["is_fraud"], score(model, holdout, features)))
    history = train[features].assign(score=score(model, train, features), event_timestamp=train["event_timestamp"])
    t_cal = time.perf_counter()
    cal, ref_frame = calibrate(history, features, WINDOW, lineage=repo_lineage().to_dict(), model="bench")
    calibrate_s = time.perf_counter() - t_cal
    reference = Reference(
        ref_frame, features, "bench", 0.5, {"pr_auc": offline_pr_auc}, calibration=cal, lineage=cal.lineage
    )
    if progress:
        print(f"  history {len(clean)} rows, calibrated on {cal.windows} windows in {calibrate_s:.1f} s")

    def eval_part(frame: pd.DataFrame) -> pd.DataFrame:
        part = frame[frame["event_timestamp"] >= split].reset_index(drop=True)
        return part.assign(score=score(model, part, features))

    base = run_monitor(eval_part(clean), reference, features)
    false_alarms = len(base["fired"])
    if progress:
        print(f"  clean: {base['windows']} windows, {false_alarms} alert(s) fired")
    start_ts = day_start(TRAIN_DAYS + INCIDENT_DAY) + INCIDENT_HOUR * 3600
    slo_s = _stream_slo_s()
    scenarios: dict[str, Any] = {}
    for kind, options in INCIDENTS.items():
        incident = Incident(kind, int(start_ts * 1e6), **options)
        frame = eval_part(simulate_traffic(days, N_USERS, incident=incident))
        run = run_monitor(frame, reference, features)
        first_window = int(np.searchsorted(run["ends"], start_ts)) + 1  # the window in which it started
        wanted = ("PerformanceDecay",) if kind == "concept_shift" else ("FeatureDrift", "PredictionDrift")
        before = [f for f in run["fired"] if f[0] < first_window]
        after = [f for f in run["fired"] if f[0] >= first_window and f[1] in wanted]
        entry: dict[str, Any] = {
            **options,
            "false_alarms_before": len(before),
            "detection_delay_windows": after[0][0] - first_window + 1 if after else None,
            "detection_delay_hours": round((after[0][2] - start_ts) / 3600, 2) if after else None,
            "alerts": sorted({f[1] for f in after}),
        }
        if kind == "stuck_stream":  # freshness: stream views' age at each window end vs their SLO
            breach = next((k for k, end in enumerate(run["ends"], 1) if end - start_ts > slo_s), None)
            entry["freshness_slo_s"] = slo_s
            entry["freshness_delay_windows"] = breach - first_window + 1 if breach else None
        if kind == "concept_shift":
            entry["label_delay_median_h"] = {"legit": 20.0, "fraud": 40.0}
        scenarios[kind] = entry
        if progress:
            print(f"  {kind}: {entry}")
    drift_delays = [s["detection_delay_windows"] for k, s in scenarios.items() if k != "concept_shift"]
    return {
        "false_alarms_per_clean_day_defaults": false_alarms / EVAL_DAYS,
        "false_alarms_clean_14_days": false_alarms,
        "detection_delay_windows_max": None if None in drift_delays else max(drift_delays),
        "concept_shift_detection": scenarios["concept_shift"],
        "scenarios": scenarios,
        "deployment_window_eval_s_p50": float(np.median(base["eval_s"])),
        "deployment_calibration": {
            "windows": cal.windows,
            "seconds": calibrate_s,
            "margin": cal.margin,
            "thresholds": cal.thresholds,
            "score_threshold": cal.score_threshold,
        },
        "deployment_note": (
            f"{TRAIN_DAYS} training days + {EVAL_DAYS} evaluation days, {N_USERS} users (~{len(clean) // days} "
            f"predictions/day), windows of {WINDOW}, incidents from eval day {INCIDENT_DAY} {INCIDENT_HOUR}:00 UTC, "
            "monitor at default settings with the model's calibration"
        ),
        "deployment_eval_s": time.perf_counter() - t0,
    }


if __name__ == "__main__":
    import json
    import sys

    sys.stdout.reconfigure(line_buffering=True)

    print(json.dumps(evaluate(), indent=2, default=str))
