"""The drift monitor: windows of the ``predictions`` stream vs the production model's reference sample.

:meth:`Monitor.process_window` holds all the per-window logic (drift, gauges, reports, alerts,
retraining) and is what unit tests drive directly; :meth:`Monitor.run` feeds it from Kafka
(``predictions`` + ``labels`` in one consumer group), committing offsets after each window so a
restart resumes where the last evaluated window ended (at-least-once: the rows of an unfinished
window are read again). State that must survive a restart (window counter, alert state,
retraining cool-down, the labelled pairs) is in ``<state_dir>/monitor/state.json``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.alerts import Alert, AlertSink, AlertTracker, iso, runbook
from monitoring.decode import MalformedMessage, PredictionDecoder, decode_label
from monitoring.drift import SCORE_COLUMN, DriftConfig, DriftDetector, WindowDrift
from monitoring.metrics import MonitorMetrics
from monitoring.performance import Performance, PerformanceTracker
from monitoring.reference import Reference, ReferenceLoader, as_reference, registry_reference
from monitoring.reports import ReportStore, render_report
from monitoring.retrain import RetrainConfig, RetrainController
from monitoring.windows import Window, Windower, WindowSpec

log = logging.getLogger(__name__)

FEATURE_DRIFT = "FeatureDrift"
PREDICTION_DRIFT = "PredictionDrift"
PERFORMANCE_DECAY = "PerformanceDecay"
DEFAULT_PR_AUC_FLOOR = 0.2  # when the model's offline PR-AUC is unknown
PR_AUC_FLOOR_RATIO = 0.7  # else: floor = ratio x offline PR-AUC


@dataclass(frozen=True)
class MonitorConfig:
    window: WindowSpec = field(default_factory=WindowSpec)
    drift: DriftConfig = field(default_factory=DriftConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    alert_min_features: int = 1  # drifted features that make a window count for FeatureDrift
    alert_windows: int = 1  # consecutive such windows before FeatureDrift fires
    repeat_every: int = 12  # re-send a firing alert every N windows
    perf_window: int = 5000  # labelled predictions in the rolling performance
    perf_min_labels: int = 500
    perf_min_positives: int = 10
    min_pr_auc: float | None = None  # None: 0.7 x the model's offline PR-AUC, or 0.2
    min_recall: float | None = None  # None: no recall floor
    decision_threshold: float | None = None  # None: the model's threshold, or 0.5
    reports_keep: int = 20
    latest_report_every_s: float = 300.0
    render_reports: bool = True
    # Under persistent drift, render a drifted window's report at most this often (a report costs
    # ~1.5 s of CPU; one per 5k-event window would cap the monitor far below the stream's rate).
    # The first drifted window of an episode always gets one.
    drift_report_every_s: float = 60.0
    reference_check_every_s: float = 300.0
    commit_every_window: bool = True


class Monitor:
    def __init__(
        self,
        config: MonitorConfig | None = None,
        reference_loader: ReferenceLoader = registry_reference,
        state_dir: Path | None = None,
        metrics: MonitorMetrics | None = None,
        sink: AlertSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from core.settings import settings

        self.config = config or MonitorConfig()
        self.state_dir = Path(state_dir or settings().state_dir)
        self.metrics = metrics or MonitorMetrics()
        self.sink = sink or AlertSink(metrics=self.metrics)
        self.clock = clock
        self.reference_loader = reference_loader
        self.reports = ReportStore(
            self.state_dir / "reports" / "drift", self.config.reports_keep, self.config.latest_report_every_s
        )
        state = self._load_state()
        self.window_id: int = int(state.get("window_id", 0))
        self.feature_streak: int = int(state.get("feature_streak", 0))
        self.feature_streak_start: float = float(state.get("feature_streak_start", 0.0))
        self.alerts = AlertTracker(self.config.repeat_every, state.get("alerts"))
        self.retrain = RetrainController(
            self.config.retrain, self.monitor_dir / "retrain", self.metrics, clock, state.get("retrain")
        )
        self.reference: Reference
        self.detector: DriftDetector
        self._install_reference(as_reference(reference_loader()))
        self.performance = PerformanceTracker(self.config.perf_window, self._decision_threshold())
        for score, label in state.get("pairs", []):
            self.performance.pairs.append((float(score), int(label)))
        self.results: list[WindowDrift] = []
        self.malformed = 0
        self._labels_seen = -1
        self._last_drift_report = ""
        self._last_drift_report_at = -math.inf
        self._last_reference_check = clock()

    # ------------------------------------------------------------------ reference

    @property
    def monitor_dir(self) -> Path:
        return self.state_dir / "monitor"

    def _install_reference(self, ref: Reference) -> None:
        self.reference = ref
        self.detector = DriftDetector(ref.frame, ref.features, self.config.drift)
        if getattr(self, "decoder", None) is None or self.decoder.features != list(ref.features):
            self.decoder = PredictionDecoder(ref.features)
        self.metrics.drift_score.clear()
        self.metrics.drift_detected.clear()
        self.metrics.missing_value_rate.clear()
        self.metrics.drift_threshold.clear()
        log.info(
            "reference: model %s, %d rows, %d features; methods %s",
            ref.model,
            len(ref.frame),
            len(ref.features),
            sorted({m for m, _t in self.detector.methods().values()}),
        )

    def _decision_threshold(self) -> float:
        if self.config.decision_threshold is not None:
            return self.config.decision_threshold
        return self.reference.threshold if self.reference.threshold is not None else 0.5

    def pr_auc_floor(self) -> float:
        if self.config.min_pr_auc is not None:
            return self.config.min_pr_auc
        offline = self.reference.metrics.get("pr_auc")
        if isinstance(offline, int | float) and math.isfinite(offline):
            return PR_AUC_FLOOR_RATIO * float(offline)
        return DEFAULT_PR_AUC_FLOOR

    def reload_reference(self) -> bool:
        """Reload the reference (after retraining or a promotion); True if the model changed."""
        try:
            ref = as_reference(self.reference_loader())
        except Exception as exc:  # noqa: BLE001 - keep monitoring with the old reference
            log.error("could not reload the reference: %s", exc)
            return False
        same_model = ref.model == self.reference.model and ref.model not in ("dataframe", "unknown")
        if same_model or (ref.features == self.reference.features and ref.frame.equals(self.reference.frame)):
            return False
        if ref.features != self.reference.features:
            log.warning("the new model has other features; windows in progress are dropped")
        self._install_reference(ref)
        self.performance.threshold = self._decision_threshold()
        return True

    # ------------------------------------------------------------------ one window

    def process_window(self, rows: np.ndarray | pd.DataFrame, start: float = 0.0, end: float = 0.0) -> WindowDrift:
        """Evaluate one window (float matrix in ``features + [score]`` order, or a DataFrame) and act on it."""
        self.window_id += 1
        t0 = time.perf_counter()
        result = self.detector.evaluate(rows, start, end, self.window_id)
        eval_s = time.perf_counter() - t0
        result = _with_eval_seconds(result, eval_s)
        self.results.append(result)
        del self.results[:-100]
        self._export(result)

        report = self._maybe_render(rows, result)

        self._alerts(result, report)
        perf_low = self.update_performance(report)
        self._retrain(result, perf_low)
        self._save_state()
        drifted = result.drifted_features
        log.info(
            "window %d: %d rows, drift share %.2f (%d/%d features%s), score drift %.3f%s, eval %.0f ms",
            result.window_id,
            result.n_rows,
            result.drift_share,
            len(drifted),
            sum(c.tested for c in result.features.values()),
            f": {', '.join(drifted[:5])}" if drifted else "",
            result.prediction.score,
            " DRIFT" if result.prediction.detected else "",
            eval_s * 1000,
        )
        return result

    def _export(self, r: WindowDrift) -> None:
        m = self.metrics
        for name, c in r.features.items():
            m.drift_score.labels(feature=name).set(c.score)
            m.drift_detected.labels(feature=name).set(1.0 if c.detected else 0.0)
            m.missing_value_rate.labels(feature=name).set(c.missing_rate)
            m.drift_threshold.labels(feature=name).set(c.threshold)
        m.drift_share.set(r.drift_share)
        m.dataset_drift.set(1.0 if r.dataset_drift else 0.0)
        m.prediction_drift_score.set(r.prediction.score)
        m.prediction_drift_detected.set(1.0 if r.prediction.detected else 0.0)
        m.window_size.set(r.n_rows)
        m.window_eval_seconds.set(r.eval_seconds)
        m.windows_total.inc()
        m.last_window_timestamp.set(self.clock())

    def update_performance(self, report: str = "") -> bool:
        """Recompute the rolling performance from the labels joined so far, export it, fire or resolve
        PerformanceDecay; returns whether performance is below its floor."""
        perf = self.performance.metrics()
        low, detail = self._performance_check(perf)
        self.metrics.performance_low.set(1.0 if low else 0.0)
        action = self.alerts.update(PERFORMANCE_DECAY, low, self.clock())
        if action:
            cfg = self.config
            summary = f"model performance decayed: {detail} on the last {perf.n if perf else 0} labelled predictions"
            details = {"model": self.reference.model, "pr_auc_floor": self.pr_auc_floor(), "min_recall": cfg.min_recall}
            if perf is not None:
                details.update(
                    precision=perf.precision,
                    recall=perf.recall,
                    pr_auc=perf.pr_auc,
                    labelled=perf.n,
                    positives=perf.positives,
                )
            self._send(PERFORMANCE_DECAY, action, (summary, details, "critical"), report)
        self._labels_seen = self.performance.labelled
        return low

    def _performance_check(self, perf: Performance | None) -> tuple[bool, str]:
        self.metrics.pr_auc_floor.set(self.pr_auc_floor())
        if perf is None:
            return False, ""
        m = self.metrics
        m.precision.set(perf.precision)
        m.recall.set(perf.recall)
        m.pr_auc.set(perf.pr_auc)
        m.labelled_rows.set(perf.n)
        cfg = self.config
        if perf.n < cfg.perf_min_labels or perf.positives < cfg.perf_min_positives:
            return False, ""
        problems = []
        floor = self.pr_auc_floor()
        if perf.pr_auc < floor:
            problems.append(f"PR-AUC {perf.pr_auc:.3f} < {floor:.3f}")
        if cfg.min_recall is not None and perf.recall < cfg.min_recall:
            problems.append(f"recall {perf.recall:.3f} < {cfg.min_recall:.3f}")
        return bool(problems), "; ".join(problems)

    def _maybe_render(self, rows: np.ndarray | pd.DataFrame, r: WindowDrift) -> str:
        """Path of the report that documents this window ('' if none): its own, or under persistent
        drift the latest drift report when this window's was skipped to save time."""
        if not self.config.render_reports:
            return ""
        now = self.clock()
        if r.any_drift:
            new_episode = not any(
                self.alerts.states.get(name) is not None and self.alerts.states[name].active
                for name in (FEATURE_DRIFT, PREDICTION_DRIFT)
            )
            if new_episode or now - self._last_drift_report_at >= self.config.drift_report_every_s:
                path = self._render(rows, r)
                if path:
                    self._last_drift_report, self._last_drift_report_at = path, now
                return path
            self.metrics.reports_skipped.inc()
            return self._last_drift_report
        if self.reports.latest_due(now):
            self._render(rows, r)
        return ""

    def _render(self, rows: np.ndarray | pd.DataFrame, r: WindowDrift) -> str:
        columns = [*self.detector.features, SCORE_COLUMN]
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=columns)
        cols = [*r.features.values(), r.prediction]
        methods = {c.column: (c.method, c.threshold) for c in cols}
        categorical = [c for c, col in self.detector.categorical_columns().items() if col]
        meta = {
            "model": self.reference.model,
            "window_id": str(r.window_id),
            "window_start": iso(r.start),
            "window_end": iso(r.end),
        }
        path = self.reports.drift_path(r.window_id, r.end) if r.any_drift else self.reports.latest_path
        try:
            render_report(self.reference.frame, frame, methods, categorical, self.config.drift.drift_share, path, meta)
        except Exception as exc:  # noqa: BLE001 - a report failure must not stop monitoring
            log.error("drift report for window %d failed: %s", r.window_id, exc)
            return ""
        if r.any_drift:
            self.metrics.reports_written.labels(kind="drift").inc()
            self.reports.prune()
            # the drifted window is also the latest one
            try:
                self.reports.latest_path.unlink(missing_ok=True)
                os.link(path, self.reports.latest_path)
            except OSError:
                pass
        else:
            self.metrics.reports_written.labels(kind="latest").inc()
        self.reports.mark_latest(self.clock())
        return str(path)

    def _alerts(self, r: WindowDrift, report: str) -> None:
        cfg = self.config
        drifted = r.drifted_features
        if len(drifted) >= cfg.alert_min_features:
            if self.feature_streak == 0:
                self.feature_streak_start = r.start  # "since when": the first drifted window of the streak
            self.feature_streak += 1
        else:
            self.feature_streak = 0
        firing = self.feature_streak >= cfg.alert_windows
        action = self.alerts.update(FEATURE_DRIFT, firing, self.feature_streak_start)
        if action:
            self._send(FEATURE_DRIFT, action, self._feature_alert(r, drifted), report)
        action = self.alerts.update(PREDICTION_DRIFT, r.prediction.detected, r.start)
        if action:
            c = r.prediction
            summary = f"model score drifted: {c.method} {c.score:.3f} >= {c.threshold:.3g} (window {r.window_id}, {r.n_rows} rows)"
            details = {**self._window_details(r), "score": _col(c)}
            self._send(PREDICTION_DRIFT, action, (summary, details, "warning"), report)

    def _feature_alert(self, r: WindowDrift, drifted: list[str]) -> tuple[str, dict[str, Any], str]:
        tested = sum(c.tested for c in r.features.values())
        top = ", ".join(
            f"{f} ({r.features[f].method} {r.features[f].score:.3g} >= {r.features[f].threshold:.3g})"
            for f in drifted[:5]
        )
        summary = (
            f"{len(drifted)} of {tested} features drifted (share {r.drift_share:.2f}) in window {r.window_id}: {top}"
        )
        details = {
            **self._window_details(r),
            "drifted_features": {f: _col(r.features[f]) for f in drifted},
            "drift_share": r.drift_share,
            "dataset_drift": r.dataset_drift,
        }
        return summary, details, "critical" if r.dataset_drift else "warning"

    def _window_details(self, r: WindowDrift) -> dict[str, Any]:
        return {
            "model": self.reference.model,
            "window_id": r.window_id,
            "window_rows": r.n_rows,
            "window_start": iso(r.start),
            "window_end": iso(r.end),
        }

    def _send(self, name: str, action: str, content: tuple[str, dict[str, Any], str], report: str) -> None:
        summary, details, severity = content
        st = self.alerts.states[name]
        if action == "resolve":
            severity = "resolved"
            summary = f"{name} resolved"
            details = {"model": self.reference.model, "window_id": self.window_id}
        details = {**details, "action": action, "windows_since_start": st.windows}
        self.sink.send(Alert(name, severity, iso(st.started_at), summary, details, report, runbook(name)))

    def _retrain(self, r: WindowDrift, perf_low: bool) -> None:
        code = self.retrain.poll()
        if code == 0 and self.reload_reference():
            log.info("retraining produced a new production model %s; new reference in use", self.reference.model)
        self.retrain.observe(r.drift_share, perf_low)

    def maybe_check_reference(self) -> None:
        now = self.clock()
        if now - self._last_reference_check >= self.config.reference_check_every_s:
            self._last_reference_check = now
            if self.reload_reference():
                log.info("production model changed to %s; new reference in use", self.reference.model)

    # ------------------------------------------------------------------ state

    def _state_path(self) -> Path:
        return self.monitor_dir / "state.json"

    def _load_state(self) -> dict[str, Any]:
        path = self._state_path()
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            log.error("ignoring unreadable monitor state %s: %s", path, exc)
            return {}

    def _save_state(self) -> None:
        state = {
            "window_id": self.window_id,
            "feature_streak": self.feature_streak,
            "feature_streak_start": self.feature_streak_start,
            "alerts": self.alerts.to_state(),
            "retrain": self.retrain.to_state(),
            "pairs": list(self.performance.pairs),
            "reference_model": self.reference.model,
        }
        path = self._state_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)

    # ------------------------------------------------------------------ Kafka loop

    def run(
        self,
        consumer,
        predictions_topic: str,
        labels_topic: str | None,
        stop: threading.Event | None = None,
        max_windows: int | None = None,
        idle_exit_s: float | None = None,
        idle_flush_s: float | None = None,
        stats_every_s: float = 5.0,
    ) -> int:
        """Consume until ``stop`` is set, ``max_windows`` windows were evaluated, or nothing arrived for
        ``idle_exit_s`` seconds. Returns the number of windows evaluated."""
        from kafka.structs import OffsetAndMetadata

        stop = stop or threading.Event()
        windower = Windower(self.config.window)
        timed = self.config.window.seconds is not None
        processed: dict[Any, int] = {}
        windows = 0
        events = 0
        last_stats = last_msg = time.monotonic()
        decode = self.decoder.decode
        from monitoring.rollout import RolloutFeed

        rollout_feed = RolloutFeed(predictions_topic)
        if idle_flush_s is None and timed:
            idle_flush_s = self.config.window.seconds

        committed: dict[Any, int] = {}

        def commit_safe() -> None:
            """Commit what no unfinished window depends on: every partition when the window buffer is
            empty, else the labels partitions only."""
            offsets = {tp: off for tp, off in processed.items() if committed.get(tp) != off}
            if len(windower):
                offsets = {tp: off for tp, off in offsets.items() if tp.topic != predictions_topic}
            if offsets and self.config.commit_every_window:
                consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
                committed.update(offsets)

        def close(window: Window) -> None:
            nonlocal windows, windower, decode
            self.process_window(window.rows, window.start, window.end)
            windows += 1
            if self.config.commit_every_window and processed:
                consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in processed.items()})
                committed.update(processed)
            if decode.__self__ is not self.decoder:  # new reference: rows in progress have the old layout
                decode = self.decoder.decode
                windower = Windower(self.config.window)

        while not stop.is_set() and (max_windows is None or windows < max_windows):
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            now = time.monotonic()
            for tp, records in batch.items():
                # Rollout comparison (monitoring/rollout.py): sees every record; drift and performance keep the served ones.
                records = rollout_feed.observe(tp.topic, records)
                if max_windows is not None and windows >= max_windows:
                    break  # the rest of the batch is not committed: read again after a restart
                if tp.topic == predictions_topic:
                    for rec in records:
                        if max_windows is not None and windows >= max_windows:
                            break
                        try:
                            row, txn = decode(rec.value)
                        except MalformedMessage as exc:
                            self._malformed(tp.topic, rec, exc)
                            processed[tp] = rec.offset + 1
                            continue
                        ts = rec.timestamp / 1000.0
                        if timed:
                            early = windower.close_before(ts)
                            if early is not None:
                                close(early)
                        self.performance.add_prediction(txn, row[-1])
                        processed[tp] = rec.offset + 1
                        window = windower.add(row, ts)
                        if window is not None:
                            close(window)
                    events += len(records)
                else:
                    for rec in records:
                        try:
                            txn, label = decode_label(rec.value)
                            self.performance.add_label(txn, label)
                        except MalformedMessage as exc:
                            self._malformed(tp.topic, rec, exc)
                        processed[tp] = rec.offset + 1
                self.metrics.events_total.labels(topic=tp.topic).inc(len(records))
                if records:
                    last_msg = now
            if now - last_stats >= stats_every_s:
                self.metrics.events_per_second.set(events / (now - last_stats))
                events, last_stats = 0, now
                self._export_lag(consumer)
                commit_safe()
                if self.performance.labelled != self._labels_seen:
                    self.update_performance()
                self.maybe_check_reference()
                if self.retrain.poll() == 0:
                    self.reload_reference()
                if decode.__self__ is not self.decoder:
                    decode = self.decoder.decode
                    windower = Windower(self.config.window)
            if batch:
                continue
            idle = time.monotonic() - last_msg
            if idle_flush_s is not None and idle >= idle_flush_s and len(windower):
                window = windower.flush()
                if window is not None:
                    close(window)
            if idle_exit_s is not None and idle >= idle_exit_s:
                break
        commit_safe()
        self._export_lag(consumer)
        if self.performance.labelled != self._labels_seen:
            self.update_performance()
        return windows

    def _malformed(self, topic: str, rec, exc: Exception) -> None:
        self.malformed += 1
        self.metrics.malformed_total.labels(topic=topic).inc()
        if self.malformed <= 10 or self.malformed % 1000 == 0:
            log.warning(
                "skipping malformed %s message (partition %s offset %s): %s [%d so far]",
                topic,
                rec.partition,
                rec.offset,
                exc,
                self.malformed,
            )

    def _export_lag(self, consumer) -> None:
        try:
            assigned = list(consumer.assignment())
            if not assigned:
                return
            ends = consumer.end_offsets(assigned)
            for tp in assigned:
                lag = max(0, ends.get(tp, 0) - consumer.position(tp))
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)
        except Exception as exc:  # noqa: BLE001 - lag is informative only
            log.debug("could not read consumer lag: %s", exc)


def _col(c) -> dict[str, Any]:
    return {"method": c.method, "score": c.score, "threshold": c.threshold, "missing_rate": c.missing_rate}


def _with_eval_seconds(r: WindowDrift, seconds: float) -> WindowDrift:
    from dataclasses import replace

    return replace(r, eval_seconds=seconds)
