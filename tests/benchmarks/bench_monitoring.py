"""Drift monitor benchmark: consumer throughput through the real Kafka broker, window evaluation time,
false alarms and detection delay.

One run, side by side:
- consume: ``Monitor.run`` (kafka-python fetch + JSON decode + validation + windowing + drift per 5k window,
  HTML reports off) vs a plain kafka-python consumer that only ``json.loads`` each message, with and
  without CRC checks (kafka-python verifies CRCs in pure Python; the monitor turns that off by default);
  and ``Monitor.run`` on the same records sent as batch messages of 100 (:mod:`core.prediction_messages`,
  the shape the prediction log writes for ``/predict_batch``);
- window evaluation of a 5000-row window (24 features + score vs 5000 reference rows): the monitor's path
  (Evidently drift functions per column) vs Evidently's full ``Report`` with ``DataDriftPreset`` (and its HTML);
- the stream: 20 no-drift windows then amounts x3 from the middle of window 21 (1 partition, in order):
  false alarms in the 20 windows and detection delay = windows closed from the drift start up to and
  including the first FeatureDrift alert (1 = the window in which drift started). Subtler scenarios
  (amounts x1.3, merchant mix change) are measured on windows fed directly.
- the deployment-like evaluation (:mod:`tests.benchmarks.deployment_eval`): 14 days of simulated,
  time-ordered traffic with daily and weekly cycles, the monitor at default settings with the
  model's calibration; false alarms per clean day and detection delay per incident;
- online/offline consistency (:mod:`monitoring.consistency`) against a real Redis: the rate on clean
  stores, whether a bug injected into the online write is caught, and rows checked per second.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from core.redis_auth import connect  # noqa: E402
from tests.benchmarks.common import percentiles, write_result  # noqa: E402

WINDOW = 5000
CLEAN_WINDOWS = 20
DRIFT_WINDOWS = 4


def _messages(features: list[str]) -> tuple[list[dict], int]:
    from tests.fixtures.predictions import feature_frame, prediction_messages

    clean = feature_frame(CLEAN_WINDOWS * WINDOW + WINDOW // 2, seed=11)
    drifted = feature_frame(DRIFT_WINDOWS * WINDOW - WINDOW // 2, seed=12, amount_scale=3.0)
    frame = pd.concat([clean, drifted], ignore_index=True)
    return prediction_messages(frame, start_ts=time.time(), rate_per_s=1000, features=features), len(clean)


def _produce(topic: str, messages: list[dict]) -> float:
    from core.kafka_io import make_producer

    producer = make_producer(role="admin")
    start_ms = int(time.time() * 1000)  # recent timestamps: old ones fall to time-based retention
    t0 = time.perf_counter()
    for i, msg in enumerate(messages):
        producer.send(topic, key=msg["request_id"], value=msg, timestamp_ms=start_ms + i)
    producer.flush(timeout=120)
    elapsed = time.perf_counter() - t0
    producer.close(timeout=5)
    return len(messages) / elapsed


BATCH = 100  # records per batch message, as the prediction log writes a 100-row /predict_batch


def _produce_batched(topic: str, messages: list[dict], size: int = BATCH) -> float:
    """Send ``messages`` as batch messages of ``size`` records in the columns shape the prediction log writes
    (:func:`core.prediction_messages.encode_columns`); records/s."""
    from core.kafka_io import make_producer
    from core.prediction_messages import encode_columns

    names = list(messages[0]["features"])
    keys = ("transaction_id", "user_id", "merchant_id")
    producer = make_producer(role="admin", value_serializer=None)
    t0 = time.perf_counter()
    for lo in range(0, len(messages), size):
        part = messages[lo : lo + size]
        predicted = [datetime.fromisoformat(m["prediction_timestamp"].replace("Z", "+00:00")).timestamp() for m in part]
        rows = np.array([[np.nan if m["features"][f] is None else m["features"][f] for f in names] for m in part])
        value = encode_columns([m["request_id"] for m in part], {k: [m[k] for m in part] for k in keys},
                               [m["event_timestamp"] for m in part], predicted, f"{part[0]['model_name']}:{part[0]['model_version']}",
                               "production", names, rows, [m["score"] for m in part], [m["decision"] for m in part],
                               [m["missing_features"] for m in part], [m["feature_age_seconds"] for m in part],
                               [True] * len(part), [None] * len(part))
        producer.send(topic, key=part[0]["request_id"], value=value, timestamp_ms=int(max(predicted) * 1000))
    producer.flush(timeout=120)
    elapsed = time.perf_counter() - t0
    producer.close(timeout=5)
    return len(messages) / elapsed


def _consumer(topic: str, group_prefix: str, check_crcs: bool):
    """A consumer of ``topic`` in a new group, with large fetches (both consume benchmarks use the same)."""
    from core.kafka_io import make_consumer

    return make_consumer([topic], f"{group_prefix}-{uuid.uuid4().hex[:8]}", role="admin", check_crcs=check_crcs,
                         max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024,
                         max_partition_fetch_bytes=16 * 1024 * 1024)


def _monitor_consume(topic: str, n: int, reference: pd.DataFrame, features: list[str]):
    """``Monitor.run`` over the ``n`` records of ``topic`` from the start: (monitor, records/s, CPU s, windows)."""
    from monitoring.alerts import AlertSink
    from monitoring.metrics import MonitorMetrics
    from monitoring.monitor import Monitor, MonitorConfig
    from monitoring.reference import Reference
    from monitoring.retrain import RetrainConfig
    from monitoring.windows import WindowSpec

    with tempfile.TemporaryDirectory() as tmp:
        metrics = MonitorMetrics()
        config = MonitorConfig(window=WindowSpec(size=WINDOW), render_reports=False, retrain=RetrainConfig(enabled=False))
        mon = Monitor(config, lambda: Reference(reference, features, "bench"), Path(tmp), metrics,
                      AlertSink(metrics=metrics))
        consumer = _consumer(topic, "bench", check_crcs=False)
        consumer.poll(timeout_ms=2000, max_records=1)  # join the group, fetch metadata
        consumer.seek_to_beginning()
        cpu0, t0 = time.process_time(), time.perf_counter()
        windows = mon.run(consumer, topic, None, max_windows=n // WINDOW, idle_exit_s=5)
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        consumer.close(autocommit=False)
    return mon, n / elapsed, cpu, windows


def _batched_consume(messages: list[dict], reference: pd.DataFrame, features: list[str]) -> dict:
    """The monitor on batch messages: same records, same drift verdicts expected."""
    from core.kafka_io import ensure_topics

    topic = f"bench-batches-{uuid.uuid4().hex[:8]}"
    ensure_topics([topic], partitions=1, role="admin")
    _produce_batched(topic, messages)
    mon, rate, cpu, windows = _monitor_consume(topic, len(messages), reference, features)
    return {"consume_batched_events_per_s": rate, "consume_batched_cpu_s": cpu, "consume_batched_windows": windows,
            "consume_batched_drift_windows": [r.window_id for r in mon.results if r.any_drift],
            "consume_batched_note": f"the same records as batch messages of {BATCH} (the columns shape the prediction log writes), "
                                    "Monitor.run as in consume"}


def _plain_consume(topic: str, n: int, check_crcs: bool) -> float:
    import json

    consumer = _consumer(topic, "plain", check_crcs)
    seen = 0
    t0 = None
    deadline = time.monotonic() + 300
    while seen < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {seen} of {n} messages came back from {topic} within 300 s")
        batch = consumer.poll(timeout_ms=1000, max_records=5000)
        if t0 is None and batch:
            t0 = time.perf_counter()
        for records in batch.values():
            for r in records:
                json.loads(r.value)
            seen += len(records)
    elapsed = time.perf_counter() - t0
    consumer.close(autocommit=False)
    return n / elapsed


def _window_eval(reference: pd.DataFrame, features: list[str]) -> dict:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    from monitoring.drift import DriftDetector
    from tests.fixtures.predictions import feature_frame

    detector = DriftDetector(reference, features)
    windows = [feature_frame(WINDOW, seed=100 + i, amount_scale=3.0 if i % 2 else 1.0) for i in range(10)]
    matrices = [w[[*features, "score"]].to_numpy(dtype=float) for w in windows]
    detector.evaluate(matrices[0])  # warm-up
    fast = []
    for m in matrices * 2:
        t0 = time.perf_counter()
        detector.evaluate(m)
        fast.append(time.perf_counter() - t0)
    cols = [*features, "score"]
    methods = detector.methods(WINDOW)
    cat = [c for c, is_cat in detector.categorical_columns().items() if is_cat]
    definition = DataDefinition(numerical_columns=[c for c in cols if c not in cat], categorical_columns=cat)
    full, html = [], []
    for w in windows[:3]:
        t0 = time.perf_counter()
        preset = DataDriftPreset(
            per_column_method={c: m for c, (m, _) in methods.items()},
            per_column_threshold={c: t for c, (_, t) in methods.items()},
        )
        snapshot = Report([preset]).run(
            Dataset.from_pandas(w[cols], data_definition=definition),
            Dataset.from_pandas(reference[cols], data_definition=definition),
        )
        full.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            snapshot.save_html(str(Path(tmp) / "r.html"))
            html.append(time.perf_counter() - t0)
    return {"fast": percentiles(fast), "full_report": percentiles(full), "html": percentiles(html)}


def _direct_delay(reference: pd.DataFrame, features: list[str], **drift) -> dict:
    """Windows fed directly: 20 clean, then drift from the middle of window 21."""
    from monitoring.monitor import FEATURE_DRIFT, Monitor, MonitorConfig
    from monitoring.reference import Reference
    from monitoring.retrain import RetrainConfig
    from tests.fixtures.predictions import feature_frame

    with tempfile.TemporaryDirectory() as tmp:
        mon = Monitor(
            MonitorConfig(render_reports=False, retrain=RetrainConfig(enabled=False)),
            lambda: Reference(reference, features, "bench"),
            Path(tmp),
        )
        clean = feature_frame(CLEAN_WINDOWS * WINDOW + WINDOW // 2, seed=21)
        drifted = feature_frame(DRIFT_WINDOWS * WINDOW - WINDOW // 2, seed=22, **drift)
        rows = pd.concat([clean, drifted], ignore_index=True)[[*features, "score"]].to_numpy(dtype=float)
        first_alert = None
        for k in range(CLEAN_WINDOWS + DRIFT_WINDOWS):
            before = len(mon.sink.sent)
            mon.process_window(rows[k * WINDOW : (k + 1) * WINDOW], k, k)
            if first_alert is None and any(a.alert == FEATURE_DRIFT for a in mon.sink.sent[before:]):
                first_alert = k + 1
        false_alarms = sum(1 for r in mon.results[:CLEAN_WINDOWS] if r.any_drift)
        drift_window = CLEAN_WINDOWS + 1
        return {
            "false_alarms_in_20_windows": false_alarms,
            "detection_delay_windows": None if first_alert is None else first_alert - drift_window + 1,
            "drifted_features_first_alert": mon.results[first_alert - 1].drifted_features if first_alert else [],
        }


def _consistency(redis_client) -> dict:
    """Clean stores and a bug injected into the online write (txn_sum_1h x1.05), 2000 users, 2 days."""
    from monitoring.consistency import check
    from tests.fixtures.consistency import offline_stores, serve

    with tempfile.TemporaryDirectory() as tmp:
        views, request_time = offline_stores(Path(tmp), n_users=2000, days=2)
        specs = [j for _s, j in views]
        clean_records = serve(redis_client, views, request_time)
        t0 = time.perf_counter()
        clean = check(clean_records, specs)
        seconds = time.perf_counter() - t0

        def bug(spec, rows):
            if "txn_sum_1h" in rows:
                rows["txn_sum_1h"] = rows["txn_sum_1h"] * 1.05
            return rows

        skewed = check(serve(redis_client, views, request_time, bug), specs)
    compared = sum(c.rows for c in clean.features.values())
    agree = sum(c.consistent for c in clean.features.values())
    bad = skewed.features["user_txn_aggregates:txn_sum_1h"].rate
    others = [c.rate for ref, c in skewed.features.items() if ref != "user_txn_aggregates:txn_sum_1h"]
    return {
        "consistency_rate_clean": agree / compared,
        "consistency_rate_clean_worst_feature": min(c.rate for c in clean.features.values()),
        "consistency_detects_injected_skew": int(bad < 0.99 and min(others) >= 0.999),
        "consistency_injected_skew_rate": bad,
        "consistency_rows_per_s": clean.rows / seconds,
        "consistency_values_per_s": compared / seconds,
        "consistency_rows": clean.rows,
        "consistency_note": "records decoded + point-in-time join (training.pit_join) + comparison, 16 stream features",
    }


def main() -> dict:
    from core.kafka_io import ensure_topics
    from core.settings import settings
    from infra import kafka_broker, redis_server
    from infra.stack import up
    from monitoring.monitor import FEATURE_DRIFT
    from tests.fixtures.predictions import DEFAULT_FEATURES, feature_frame

    features = list(DEFAULT_FEATURES)
    reference = feature_frame(WINDOW, seed=1)[[*features, "score"]]
    s = settings()
    info = up(progress=False, spark_jars=False)
    try:
        topic = f"bench-predictions-{uuid.uuid4().hex[:8]}"
        ensure_topics([topic], partitions=1, role="admin")
        messages, drift_start = _messages(features)
        produce_rate = _produce(topic, messages)
        n = len(messages)

        plain_crc = _plain_consume(topic, n, check_crcs=True)
        plain = _plain_consume(topic, n, check_crcs=False)

        mon, rate, cpu, windows = _monitor_consume(topic, n, reference, features)
        batched = _batched_consume(messages, reference, features)
        eval_total = sum(r.eval_seconds for r in mon.results)
        first_alert = next((a for a in mon.sink.sent if a.alert == FEATURE_DRIFT), None)
        drift_window = drift_start // WINDOW + 1
        delay = None if first_alert is None else first_alert.details["window_id"] - drift_window + 1
        false_alarms = sum(1 for r in mon.results[:CLEAN_WINDOWS] if r.any_drift)

        evals = _window_eval(reference, features)
        subtle = _direct_delay(reference, features, amount_scale=1.3)
        merchant = _direct_delay(reference, features, merchant_mix=True)

        client = connect(s.redis_url, role="admin")
        try:
            consistency = _consistency(client)
        finally:
            client.close()
    finally:
        if info.kafka.started:
            kafka_broker.stop(progress=False, s=s)
        if info.redis.started:
            redis_server.stop(progress=False, s=s)

    from tests.benchmarks.deployment_eval import evaluate

    deployment = evaluate()  # no services needed: after the stack is stopped
    result = {
        "consume_events_per_s": rate,
        "consume_events": n,
        "consume_windows": windows,
        "consume_cpu_s": cpu,
        "consume_window_eval_s_total": eval_total,
        "consume_note": "Monitor.run incl. drift per 5k window, reports off, 1 partition, check_crcs=False",
        "consume_drift_windows": [r.window_id for r in mon.results if r.any_drift],
        **batched,
        "plain_kafka_json_events_per_s": plain,
        "plain_kafka_json_crc_events_per_s": plain_crc,
        "produce_events_per_s": produce_rate,
        "window_eval_s_5k": evals["fast"]["p50"],
        "window_eval_5k": evals["fast"],
        "evidently_full_report_s_5k": evals["full_report"],
        "evidently_html_s_5k": evals["html"],
        "detection_delay_windows": delay,
        "false_alarms_in_20_windows": false_alarms,
        "first_alert_features": list(first_alert.details["drifted_features"]) if first_alert else [],
        "scenario": f"{CLEAN_WINDOWS} clean windows of {WINDOW}, then amounts x3 from mid window {drift_window}",
        "subtle_amount_x1_3": subtle,
        "merchant_mix_change": merchant,
        "reference_rows": len(reference),
        "features": len(features),
        **consistency,
        **deployment,
        "load_avg_1m": os.getloadavg()[0],
    }
    path = write_result("monitoring", result)
    print(f"wrote {path}")
    for key in (
        "consume_events_per_s",
        "consume_batched_events_per_s",
        "plain_kafka_json_events_per_s",
        "plain_kafka_json_crc_events_per_s",
        "window_eval_s_5k",
        "detection_delay_windows",
        "false_alarms_in_20_windows",
        "false_alarms_per_clean_day_defaults",
        "detection_delay_windows_max",
        "consistency_rate_clean",
        "consistency_detects_injected_skew",
        "consistency_rows_per_s",
    ):
        print(f"{key}: {result[key]}")
    print("evidently full report 5k:", evals["full_report"])
    print("subtle x1.3:", subtle, "merchant mix:", merchant)
    return result


def window_eval_only() -> dict:
    """Re-measure only the 5k-window evaluation (wall and CPU seconds, flat and seasonal reference) and
    update those keys of the existing result: the full run measures them among Kafka and simulation work."""
    import json

    import numpy as np

    from monitoring.drift import DriftDetector
    from tests.benchmarks.common import RESULTS_DIR
    from tests.fixtures.predictions import DEFAULT_FEATURES, feature_frame

    features = list(DEFAULT_FEATURES)
    reference = feature_frame(WINDOW, seed=1)[[*features, "score"]]
    # seasonal: 14 days of reference rows with event times, 4 hours of window rows
    big = feature_frame(60_000, seed=3)[[*features, "score"]]
    big["event_timestamp"] = 1_759_708_800.0 + np.sort(np.random.default_rng(0).uniform(0, 14 * 86400, len(big)))
    flat, seasonal = DriftDetector(reference, features), DriftDetector(big, features)
    windows = [feature_frame(WINDOW, seed=100 + i)[[*features, "score"]].to_numpy(float) for i in range(10)]
    ts = 1_759_708_800.0 + 15 * 86400 + np.linspace(8 * 3600, 12 * 3600, WINDOW)
    out = {}
    for name, det, kw in (("flat", flat, {}), ("seasonal", seasonal, {"ts": ts})):
        det.evaluate(windows[0], **kw)
        wall, cpu = [], []
        for m in windows * 2:
            t0, c0 = time.perf_counter(), time.process_time()
            det.evaluate(m, **kw)
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        out[name] = {"wall": percentiles(wall), "cpu": percentiles(cpu)}
    path = RESULTS_DIR / "monitoring.json"
    data = json.loads(path.read_text())
    data.update(
        window_eval_s_5k=out["seasonal"]["wall"]["p50"],
        window_eval_5k=out["seasonal"]["wall"],
        window_eval_cpu_s_5k=out["seasonal"]["cpu"]["p50"],
        window_eval_flat_s_5k=out["flat"]["wall"]["p50"],
        window_eval_flat_cpu_s_5k=out["flat"]["cpu"]["p50"],
        window_eval_load_avg_1m=os.getloadavg()[0],
        window_eval_note=(
            "re-measured alone (python -m tests.benchmarks.bench_monitoring --window-eval-only): 24 features + score, "
            "5000 rows; seasonal = the default path (reference matched to the window's hours of week, 5000 rows drawn)"
        ),
    )
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(out)
    return out


def consume_only() -> dict:
    """Re-measure only the consume rates (the monitor on one-record and on batch messages, the plain consumer)
    and update those keys."""
    import json

    from core.kafka_io import ensure_topics
    from infra.stack import up
    from tests.benchmarks.common import RESULTS_DIR
    from tests.fixtures.predictions import DEFAULT_FEATURES, feature_frame

    features = list(DEFAULT_FEATURES)
    reference = feature_frame(WINDOW, seed=1)[[*features, "score"]]
    up(progress=False, spark_jars=False)
    messages, _ = _messages(features)
    topic = f"bench-predictions-{uuid.uuid4().hex[:8]}"
    ensure_topics([topic], partitions=1, role="admin")
    _produce(topic, messages)
    plain = _plain_consume(topic, len(messages), check_crcs=False)
    mon, rate, cpu, windows = _monitor_consume(topic, len(messages), reference, features)
    out = {"plain_kafka_json_events_per_s": plain, "consume_events_per_s": rate, "consume_cpu_s": cpu, "consume_windows": windows,
           "consume_window_eval_s_total": sum(r.eval_seconds for r in mon.results),
           "consume_drift_windows": [r.window_id for r in mon.results if r.any_drift],
           **_batched_consume(messages, reference, features), "consume_load_avg_1m": os.getloadavg()[0],
           "consume_measured_at": datetime.now(UTC).isoformat(timespec="seconds")}
    path = RESULTS_DIR / "monitoring.json"
    data = json.loads(path.read_text())
    data.update(out)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print({k: v for k, v in out.items() if not isinstance(v, list)})
    return out


if __name__ == "__main__":
    if "--window-eval-only" in sys.argv:
        window_eval_only()
    elif "--consume-only" in sys.argv:
        consume_only()
    else:
        main()
