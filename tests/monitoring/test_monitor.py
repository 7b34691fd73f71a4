"""The monitor's decisions, fed without Kafka: windows directly, or records through a fake consumer.

Data: prediction messages from :mod:`tests.fixtures.predictions` (features + score + labels with known
drift knobs). Expected values are recomputed here independently (sklearn, counting).
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from core.contracts import ALERT_FIELDS
from monitoring.alerts import AlertSink
from monitoring.lineage import repo_lineage
from monitoring.metrics import MonitorMetrics
from monitoring.monitor import FEATURE_DRIFT, PERFORMANCE_DECAY, PREDICTION_DRIFT, Monitor, MonitorConfig
from monitoring.reference import Reference
from monitoring.retrain import RetrainConfig
from monitoring.windows import WindowSpec
from tests.fixtures.predictions import DEFAULT_FEATURES, feature_frame, label_messages, prediction_messages
from tests.monitoring.helpers import FakeConsumer, records

F = DEFAULT_FEATURES
WINDOW = 2000
AMOUNT_FEATURES = {"txn_amount", "txn_mean_24h", "txn_sum_24h", "merchant_amount_mean_1h"}


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def lineage() -> dict[str, list[str]]:
    """The real feature repo's lineage (the synthetic rows have its feature names)."""
    return repo_lineage().to_dict()


@pytest.fixture(scope="module")
def reference(lineage) -> Reference:
    frame = feature_frame(5000, seed=1)
    test_split = feature_frame(50_000, seed=2)  # the model's offline evaluation set
    pr_auc = average_precision_score(test_split["is_fraud"], test_split["score"])
    return Reference(
        frame=frame[[*F, "score"]],
        features=F,
        model="fraud_model:ref",
        threshold=0.5,
        metrics={"pr_auc": pr_auc},
        lineage=lineage,
    )


def make_monitor(
    tmp_path: Path, reference: Reference, clock=None, retrain: RetrainConfig | None = None, **over
) -> Monitor:
    config = MonitorConfig(
        window=WindowSpec(size=WINDOW, min_events=200),
        retrain=retrain or RetrainConfig(command=["true"], enabled=False),
        perf_window=10_000,
        perf_min_labels=1000,
        latest_report_every_s=1e9,
        **over,
    )
    return Monitor(
        config, reference_loader=lambda: reference, state_dir=tmp_path, metrics=MonitorMetrics(), clock=clock or Clock()
    )


def test_injected_amount_drift_alerts_within_two_windows_and_names_its_cause(tmp_path, reference, lineage):
    mon = make_monitor(tmp_path, reference)
    for i in range(3):
        mon.process_window(feature_frame(WINDOW, seed=100 + i), 1000.0 * i, 1000.0 * i + 999)
    assert mon.sink.sent == []
    # drift starts in the middle of window 4: half of it is x3 amounts, window 5 entirely
    half = feature_frame(WINDOW // 2, seed=200), feature_frame(WINDOW // 2, seed=201, amount_scale=3.0)
    import pandas as pd

    mon.process_window(pd.concat(half, ignore_index=True), 3000.0, 3999.0)
    mon.process_window(feature_frame(WINDOW, seed=202, amount_scale=3.0), 4000.0, 4999.0)
    fired = [a for a in mon.sink.sent if a.alert == FEATURE_DRIFT]
    assert len(fired) == 1
    alert = fired[0].message()
    assert set(alert) == set(ALERT_FIELDS)
    named = set(alert["details"]["drifted_features"])
    assert AMOUNT_FEATURES <= named
    assert "amount_to_mean_24h" not in named and "account_age_days" not in named
    for name, info in alert["details"]["drifted_features"].items():
        assert info["score"] >= info["threshold"], name
    # root cause: every drifted feature computed from the raw amount is grouped under it, first
    fired_window = next(r for r in mon.results if r.window_id == alert["details"]["window_id"])
    from_amount = [f for f in fired_window.drifted_features if "amount" in lineage[f]]
    assert len(from_amount) >= len(AMOUNT_FEATURES)
    causes = alert["details"]["root_causes"]
    assert causes[0] == {"input": "amount", "features": from_amount}
    assert sorted(f for c in causes for f in c["features"]) == sorted(named)  # each drifted feature once
    assert alert["summary"].startswith(f"amount shifted: {len(from_amount)} dependent features moved (")
    assert alert["started_at"] in ("1970-01-01T00:50:00Z", "1970-01-01T01:06:40Z")  # window 4 or 5 start
    assert Path(alert["report_path"]).is_file() and Path(alert["report_path"]).stat().st_size > 10_000
    assert alert["runbook"].endswith("FeatureDrift.md") and Path(alert["runbook"]).is_file()
    # gauges
    m = mon.metrics
    assert m.value("rtml_drift_detected", {"feature": "txn_amount"}) == 1.0
    assert m.value("rtml_drift_detected", {"feature": "account_age_days"}) == 0.0
    last = mon.results[-1]
    assert m.value("rtml_drift_share") == pytest.approx(len(last.drifted_features) / len(F))
    assert m.value("rtml_drift_score", {"feature": "txn_amount"}) == pytest.approx(last.features["txn_amount"].score)
    assert m.value("rtml_monitor_window_size") == WINDOW
    assert m.value("rtml_monitor_alerts_total", {"alert": FEATURE_DRIFT, "severity": fired[0].severity}) == 1.0


def test_no_drift_for_20_windows_raises_nothing(tmp_path, reference):
    mon = make_monitor(tmp_path, reference)
    for i in range(20):
        result = mon.process_window(feature_frame(WINDOW, seed=300 + i), float(i), float(i))
        assert result.drifted_features == [], (i, result.drifted_features)
    assert mon.sink.sent == []
    assert mon.metrics.value("rtml_monitor_windows_total") == 20
    assert mon.reports.reports() == []  # no drifted window, no drift report


def test_drift_alert_repeats_then_resolves(tmp_path, reference):
    mon = make_monitor(tmp_path, reference, repeat_every=2, render_reports=False)
    for i in range(5):
        mon.process_window(feature_frame(WINDOW, seed=400 + i, amount_scale=3.0), 100.0 * i, 100.0 * i + 99)
    mon.process_window(feature_frame(WINDOW, seed=410), 500.0, 599.0)
    actions = [(a.details["action"], a.started_at) for a in mon.sink.sent if a.alert == FEATURE_DRIFT]
    assert [a for a, _ in actions] == ["fire", "repeat", "repeat", "resolve"]
    assert len({s for _, s in actions}) == 1  # same "since" throughout
    assert mon.sink.sent[-1].severity == "resolved"


def test_prediction_drift_alert(tmp_path, reference):
    mon = make_monitor(tmp_path, reference, render_reports=False)
    window = feature_frame(WINDOW, seed=500)
    window["score"] = np.clip(window["score"] * 4, 0, 1)  # the model suddenly scores everything higher
    result = mon.process_window(window, 0.0, 1.0)
    assert result.prediction.detected
    fired = [a for a in mon.sink.sent if a.alert == PREDICTION_DRIFT]
    assert len(fired) == 1 and fired[0].details["score"]["score"] == pytest.approx(result.prediction.score)
    assert mon.metrics.value("rtml_prediction_drift_score") == pytest.approx(result.prediction.score)


def _feed(mon: Monitor, frames, with_labels=True, extra=()) -> FakeConsumer:
    """Turn frames into prediction (+ label) records and run them through Monitor.run with a fake consumer."""
    recs = []
    offset = 0
    for k, frame in enumerate(frames):
        preds = prediction_messages(frame, start_ts=1_700_000_000 + 1000 * k, features=F, id_prefix=f"w{k}")
        recs += records("predictions", preds, first_offset=offset)
        offset += len(preds)
        if with_labels:
            recs += records("labels", label_messages(preds, frame), first_offset=offset)  # one "label partition"
            offset += len(preds)
    recs += list(extra)
    consumer = FakeConsumer(recs)
    mon.run(consumer, "predictions", "labels", idle_exit_s=0.0)
    return consumer


def test_performance_decay_with_labels_raises_its_alert(tmp_path, reference):
    mon = make_monitor(tmp_path, reference, render_reports=False)
    floor = 0.7 * reference.metrics["pr_auc"]
    assert mon.pr_auc_floor() == pytest.approx(floor)
    healthy = [feature_frame(WINDOW, seed=600 + i) for i in range(3)]
    _feed(mon, healthy)
    assert not [a for a in mon.sink.sent if a.alert == PERFORMANCE_DECAY]
    scores = np.concatenate([f["score"] for f in healthy])
    labels = np.concatenate([f["is_fraud"] for f in healthy])
    assert mon.metrics.value("rtml_model_pr_auc") == pytest.approx(average_precision_score(labels, scores))
    flagged = scores >= 0.5
    assert mon.metrics.value("rtml_model_recall") == pytest.approx((flagged & (labels == 1)).sum() / labels.sum())

    # concept drift: same inputs, labels no longer follow the score; the rolling window (10k) fills with them
    decayed = [feature_frame(WINDOW, seed=700 + i, concept_drift=True) for i in range(6)]
    _feed(mon, decayed)
    fired = [a for a in mon.sink.sent if a.alert == PERFORMANCE_DECAY]
    assert len(fired) == 1
    assert fired[0].details["pr_auc"] < floor
    assert not [a for a in mon.sink.sent if a.alert == FEATURE_DRIFT]  # inputs did not drift
    assert mon.metrics.value("rtml_model_pr_auc") < floor
    assert mon.metrics.value("rtml_model_performance_low") == 1.0


def test_performance_decay_hovering_at_its_floor_fires_once_and_resolves_once_clear_of_it(tmp_path, reference):
    from monitoring.performance import Performance

    mon = make_monitor(tmp_path, reference, render_reports=False)
    floor = mon.pr_auc_floor()
    # a rolling PR-AUC that wobbles around the floor, then recovers: below, just above, below, just above, clear
    sequence = [0.99, 1.01, 0.98, 1.03, 1.04, 1.06, 1.07]
    events = []
    for ratio in sequence:
        perf = Performance(precision=0.5, recall=0.5, pr_auc=ratio * floor, n=5000, positives=50)
        mon.performance.metrics = lambda perf=perf: perf
        low = mon.update_performance()
        events.append((ratio, low))
    sent = [a.severity for a in mon.sink.sent if a.alert == PERFORMANCE_DECAY]
    assert sent == ["critical", "resolved"]  # without the 5% margin: fired, resolved, fired, resolved, ...
    assert [low for _, low in events] == [True, True, True, True, True, False, False]
    assert mon.metrics.value("rtml_model_performance_low") == 0.0


def test_malformed_messages_are_counted_and_skipped(tmp_path, reference):
    mon = make_monitor(tmp_path, reference, render_reports=False)
    frame = feature_frame(WINDOW, seed=800)
    good = prediction_messages(frame, start_ts=1_700_000_000, features=F)
    bad = [
        b"{oops",
        b"null",
        json.dumps({**good[0], "score": "x"}),
        json.dumps({**good[1], "features": {"txn_amount": "12"}}),
    ]
    mixed = good[:700] + bad[:2] + good[700:] + bad[2:]
    label_bad = records("labels", [b"[]", json.dumps({"transaction_id": "t", "is_fraud": 7})], first_offset=0)
    consumer = FakeConsumer(records("predictions", mixed) + label_bad)
    windows = mon.run(consumer, "predictions", "labels", idle_exit_s=0.0)
    assert windows == 1 and mon.results[-1].n_rows == WINDOW  # every good message counted, the bad ones not
    assert mon.malformed == 6
    assert mon.metrics.value("rtml_monitor_malformed_total", {"topic": "predictions"}) == 4
    assert mon.metrics.value("rtml_monitor_malformed_total", {"topic": "labels"}) == 2
    from kafka.structs import TopicPartition

    tp = TopicPartition("predictions", 0)
    # the window was committed up to the message that completed it (the last good one) ...
    assert consumer.commits[0][tp] == mixed.index(good[-1]) + 1
    # ... and the trailing malformed ones once no window depended on them
    assert consumer.commits[-1][tp] == len(mixed)
    assert consumer.commits[-1][TopicPartition("labels", 0)] == 2


def test_retraining_fires_once_and_respects_its_cooldown(tmp_path, reference):
    clock = Clock()
    marker = tmp_path / "runs.txt"
    retrain = RetrainConfig(
        drift_share=0.3, consecutive=2, cooldown_s=3600, command=["sh", "-c", f"echo $RTML_RETRAIN_REASON >> {marker}"]
    )
    mon = make_monitor(tmp_path, reference, clock=clock, retrain=retrain, render_reports=False)
    drifted = [feature_frame(WINDOW, seed=900 + i, amount_scale=3.0) for i in range(8)]
    decisions = []
    for frame in drifted:
        clock.t += 60
        mon.process_window(frame, clock.t, clock.t)
        decisions.append(mon.retrain.decisions[-1].decision if mon.retrain.decisions else None)
        mon.retrain.stop()
    assert mon.results[0].drift_share > 0.3
    # window 1: 1 in a row; window 2: starts; then cool-down (the counter restarts: 3->1, 4->2 ...)
    assert decisions[:2] == [None, "started"]
    started = mon.retrain.decisions[0]
    assert started.reasons == ["drift"] and started.at == clock.t - 6 * 60  # window 2 of 8, a minute apart
    assert started.detail.startswith(f"drift share {mon.results[1].drift_share:.2f} > 0.3 for 2 window(s)")
    assert [d.decision for d in mon.retrain.decisions].count("started") == 1
    assert {d.decision for d in mon.retrain.decisions[1:]} == {"cooldown"}
    assert marker.read_text().split() == ["drift"]
    m = mon.metrics
    assert m.value("rtml_retrain_triggered_total", {"reason": "drift"}) == 1
    assert m.value("rtml_retrain_decisions_total", {"decision": "started"}) == 1
    assert m.value("rtml_retrain_decisions_total", {"decision": "cooldown"}) == len(mon.retrain.decisions) - 1
    log = [json.loads(line) for line in (tmp_path / "monitor" / "retrain" / "decisions.jsonl").read_text().splitlines()]
    assert [e["decision"] for e in log if e["event"] == "decision"] == [d.decision for d in mon.retrain.decisions]

    # the cool-down survives a restart of the monitor ...
    mon2 = make_monitor(tmp_path, reference, clock=clock, retrain=retrain, render_reports=False)
    for seed in (950, 951):
        clock.t += 60
        mon2.process_window(feature_frame(WINDOW, seed=seed, amount_scale=3.0), clock.t, clock.t)
    assert mon2.retrain.decisions[-1].decision == "cooldown"
    # ... and once it is over, drift starts a second run
    clock.t += 3600
    mon2.process_window(feature_frame(WINDOW, seed=952, amount_scale=3.0), clock.t, clock.t)
    mon2.retrain.stop()
    assert mon2.retrain.decisions[-1].decision == "started"
    assert marker.read_text().split() == ["drift", "drift"]


def test_retraining_on_performance_and_on_schedule_and_while_running(tmp_path, reference):
    clock = Clock()
    retrain = RetrainConfig(consecutive=99, every_s=600, cooldown_s=0, command=["sleep", "30"])
    mon = make_monitor(tmp_path, reference, clock=clock, retrain=retrain, render_reports=False)
    frame = feature_frame(WINDOW, seed=960)
    mon.process_window(frame, 0, 0)
    assert mon.retrain.decisions == []
    clock.t += 601
    mon.process_window(frame, 0, 0)
    assert (mon.retrain.decisions[-1].decision, mon.retrain.decisions[-1].reasons) == ("started", ["schedule"])
    try:
        clock.t += 601
        mon.process_window(frame, 0, 0)
        assert mon.retrain.decisions[-1].decision == "running"  # the first run still sleeps
        decision = mon.retrain.observe(0.0, performance_low=True)
        assert decision.reasons == ["performance", "schedule"] and decision.decision == "running"
    finally:
        mon.retrain.process.kill()
        mon.retrain.process.wait()


def test_report_retention_keeps_the_newest(tmp_path, reference):
    mon = make_monitor(tmp_path, reference, reports_keep=2, drift_report_every_s=0)
    for i in range(4):
        mon.process_window(feature_frame(1000, seed=970 + i, amount_scale=3.0), 60.0 * i, 60.0 * i + 59)
    reports = mon.reports.reports()
    assert [p.name.split("-")[1] for p in reports] == ["000003", "000004"]
    assert mon.reports.latest_path.is_file()
    html = reports[-1].read_text()
    assert "txn_amount" in html and "wasserstein" in html.lower()
    assert mon.metrics.value("rtml_monitor_reports_total", {"kind": "drift"}) == 4


def test_webhook_receives_the_alert(tmp_path, reference, monkeypatch):
    received = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("RTML_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
        metrics = MonitorMetrics()
        mon = Monitor(
            MonitorConfig(window=WindowSpec(size=WINDOW), render_reports=False, retrain=RetrainConfig(enabled=False)),
            reference_loader=lambda: reference,
            state_dir=tmp_path,
            metrics=metrics,
            sink=AlertSink(metrics=metrics),
        )
        mon.process_window(feature_frame(WINDOW, seed=980, amount_scale=3.0), 0, 0)
    finally:
        server.shutdown()
    assert len(received) == 1 and received[0]["alert"] == FEATURE_DRIFT
    assert set(received[0]) == set(ALERT_FIELDS)


def test_unreachable_webhook_is_counted_not_fatal(tmp_path, reference):
    metrics = MonitorMetrics()
    mon = Monitor(
        MonitorConfig(window=WindowSpec(size=WINDOW), render_reports=False, retrain=RetrainConfig(enabled=False)),
        reference_loader=lambda: reference,
        state_dir=tmp_path,
        metrics=metrics,
        sink=AlertSink(webhook="http://127.0.0.1:9/nothing", metrics=metrics),
    )
    mon.process_window(feature_frame(WINDOW, seed=981, amount_scale=3.0), 0, 0)
    assert metrics.value("rtml_monitor_alert_delivery_failures_total", {"sink": "webhook"}) == 1
    assert len(mon.sink.sent) == 1


def test_reference_can_be_a_bare_dataframe(tmp_path, reference):
    frame = reference.frame.assign(is_fraud=0)
    mon = Monitor(
        MonitorConfig(render_reports=False, retrain=RetrainConfig(enabled=False)),
        reference_loader=lambda: frame,
        state_dir=tmp_path,
        metrics=MonitorMetrics(),
    )
    assert mon.reference.features == F
    assert mon.pr_auc_floor() == 0.2  # no offline PR-AUC known


def test_time_windows_and_sliding_windows_through_the_consumer_loop(tmp_path, reference):
    frame = feature_frame(3000, seed=990)
    msgs = prediction_messages(frame, start_ts=0, features=F)
    # 100 ms apart: 3000 messages span 300 s; 60 s time windows close every 600 messages (size cap 10k)
    recs = records("predictions", msgs, step_ms=100)
    mon = make_monitor(tmp_path, reference, render_reports=False)
    mon.config = replace(mon.config, window=WindowSpec(size=10_000, seconds=60, min_events=100))
    consumer = FakeConsumer(recs)
    mon.run(consumer, "predictions", None, idle_exit_s=0.0, idle_flush_s=None)
    assert [r.n_rows for r in mon.results] == [600, 600, 600, 600]  # the last 600 wait for more (or idle flush)
    assert [round(r.end - r.start, 1) for r in mon.results] == [59.9] * 4

    mon2 = make_monitor(tmp_path / "sliding", reference, render_reports=False)
    mon2.config = replace(mon2.config, window=WindowSpec(size=2000, mode="sliding", slide=500, min_events=2000))
    mon2.run(FakeConsumer(records("predictions", msgs)), "predictions", None, idle_exit_s=0.0)
    assert [r.n_rows for r in mon2.results] == [2000, 2000, 2000]  # at 2000, 2500, 3000 events


def test_a_new_production_model_switches_the_reference(tmp_path, reference):
    current = {"ref": reference}
    clock = Clock()
    config = MonitorConfig(render_reports=False, retrain=RetrainConfig(enabled=False), reference_check_every_s=300)
    mon = Monitor(config, lambda: current["ref"], tmp_path, MonitorMetrics(), clock=clock)
    shifted = feature_frame(5000, seed=991, amount_scale=3.0)
    current["ref"] = Reference(shifted[[*F, "score"]], F, model="fraud_model:new")
    clock.t += 100
    mon.maybe_check_reference()
    assert mon.reference.model == "fraud_model:ref"  # not checked yet
    clock.t += 300
    mon.maybe_check_reference()
    assert mon.reference.model == "fraud_model:new"
    # traffic like the new model's training data does not drift against its reference
    result = mon.process_window(feature_frame(WINDOW, seed=992, amount_scale=3.0), 0, 0)
    assert result.drifted_features == []


def test_feature_drift_needing_two_windows_reports_the_first_as_since(tmp_path, reference):
    mon = make_monitor(tmp_path, reference, alert_windows=2, render_reports=False)
    mon.process_window(feature_frame(WINDOW, seed=993), 0.0, 99.0)
    mon.process_window(feature_frame(WINDOW, seed=994, amount_scale=3.0), 100.0, 199.0)
    assert mon.sink.sent == []  # one drifted window is not enough
    mon.process_window(feature_frame(WINDOW, seed=995, amount_scale=3.0), 200.0, 299.0)
    assert [a.alert for a in mon.sink.sent] == [FEATURE_DRIFT]
    assert mon.sink.sent[0].started_at == "1970-01-01T00:01:40Z"  # start of the first drifted window (100 s)


def test_persistent_drift_reports_are_rate_limited(tmp_path, reference):
    clock = Clock()
    mon = make_monitor(tmp_path, reference, clock=clock, drift_report_every_s=120)
    paths = []
    for i in range(5):  # a drifted window every 50 s: reports at 0 s (episode start) and 150 s
        mon.process_window(feature_frame(1000, seed=996 + i, amount_scale=3.0), clock.t, clock.t + 49)
        paths.append(mon.report_limit.last_drift_report)
        clock.t += 50
    ids = [p.name.split("-")[1] for p in mon.reports.reports()]
    assert ids == ["000001", "000004"]
    assert mon.metrics.value("rtml_monitor_reports_skipped_total") == 3
    # a new episode after the drift cleared gets its report at once
    mon.process_window(feature_frame(1000, seed=1001), clock.t, clock.t)
    clock.t += 1
    mon.process_window(feature_frame(1000, seed=1002, amount_scale=3.0), clock.t, clock.t)
    assert [p.name.split("-")[1] for p in mon.reports.reports()] == ["000001", "000004", "000007"]
    alert = mon.sink.sent[-1]
    assert alert.details["action"] == "fire" and alert.report_path.endswith(mon.reports.reports()[-1].name)
