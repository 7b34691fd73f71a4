"""Seasonal reference and calibration: windows are compared with the same hours of the week, and the
defaults measured on clean history stay quiet on daily and weekly cycles but catch real incidents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from monitoring.calibration import Calibration, calibrate, load, save, tumbling
from monitoring.drift import SCORE_COLUMN, TIME_COLUMN, DriftConfig, DriftDetector
from monitoring.seasonal import SeasonalConfig, SeasonalReference, hour_of_week

MONDAY = 1_759_708_800.0  # 2025-10-06 00:00 UTC, a Monday


def test_hour_of_week_counts_from_monday_midnight_utc():
    ts = np.array([MONDAY, MONDAY + 3599, MONDAY + 3600, MONDAY + 5 * 86400 + 13 * 3600, MONDAY + 7 * 86400])
    assert hour_of_week(ts).tolist() == [0, 0, 1, 5 * 24 + 13, 0]
    assert pd.Timestamp(MONDAY, unit="s").day_name() == "Monday"


def _cyclic_history(days: int, per_hour: int = 60, seed: int = 0) -> pd.DataFrame:
    """A feature whose level follows the hour of day (and is higher on weekends)."""
    rng = np.random.default_rng(seed)
    ts = MONDAY + np.sort(rng.uniform(0, days * 86400, days * 24 * per_hour))
    hour = (ts // 3600) % 24
    weekend = ((ts // 86400 + 3) % 7 >= 5).astype(float)
    level = 10 + 5 * np.sin(hour / 24 * 2 * np.pi) + 3 * weekend
    return pd.DataFrame(
        {"x": level + rng.normal(0, 1, ts.size), SCORE_COLUMN: rng.uniform(0, 1, ts.size), TIME_COLUMN: ts}
    )


def test_match_draws_reference_rows_from_the_windows_hours_in_proportion():
    hist = _cyclic_history(14)
    ref = SeasonalReference(hist[["x", SCORE_COLUMN]].to_numpy(), hist[TIME_COLUMN].to_numpy(), SeasonalConfig(rows=900))
    # a window on a later Wednesday, 2/3 of its rows at 08:xx and 1/3 at 09:xx
    wed = MONDAY + 21 * 86400 + 2 * 86400
    window_ts = np.concatenate([wed + 8 * 3600 + np.arange(200), wed + 9 * 3600 + np.arange(100)])
    rows = ref.match(window_ts, seed=1)
    hows = hour_of_week(ref.ts[rows])
    assert set(hows.tolist()) == {2 * 24 + 8, 2 * 24 + 9}  # same weekday and hours only
    assert (hows == 2 * 24 + 8).sum() == 600 and (hows == 2 * 24 + 9).sum() == 300
    # leave-one-day-out: rows of excluded days are never drawn
    day = np.floor(ref.ts / 86400).astype(int)
    excluded = np.unique(day[rows])[:1]
    assert not np.isin(day[ref.match(window_ts, exclude_days=excluded, seed=1)], excluded).any()


def test_sparse_hours_fall_back_to_the_same_hour_on_days_of_the_same_kind():
    hist = _cyclic_history(14, per_hour=4)  # ~8 rows per weekday-hour over 2 weeks: below min_slot_rows, ~16 per weekend hour
    ref = SeasonalReference(hist[["x"]].to_numpy(), hist[TIME_COLUMN].to_numpy(), SeasonalConfig(min_slot_rows=12, rows=100))
    saturday_3am = MONDAY + 5 * 86400 + 3 * 3600
    hows = hour_of_week(ref.ts[ref.match(np.array([saturday_3am]), seed=0)])
    assert set((hows % 24).tolist()) == {3} and set((hows // 24).tolist()) <= {5, 6}  # 03:xx on weekends


def test_seasonal_reference_removes_the_daily_cycle_that_a_flat_reference_reads_as_drift():
    hist = _cyclic_history(14)
    flat = DriftDetector(hist.drop(columns=[TIME_COLUMN]), ["x"])
    seasonal = DriftDetector(hist, ["x"])
    night = hist[(hist[TIME_COLUMN] // 3600 % 24).between(0, 3)].iloc[:500]  # clean traffic, at night
    assert flat.evaluate(night).features["x"].detected  # the flat reference calls the night drift
    r = seasonal.evaluate(night, ts=night[TIME_COLUMN].to_numpy())
    assert not r.features["x"].detected and r.features["x"].score < 0.1
    assert seasonal.last_reference_rows is not None and len(seasonal.last_reference_rows) == SeasonalConfig().rows


def test_calibration_is_margin_times_the_worst_clean_window_and_round_trips(tmp_path):
    hist = _cyclic_history(14, seed=3)
    cal, reference = calibrate(hist, ["x"], window_rows=1000, margin=1.5, lineage={"x": ["raw_x"]}, model="m:1")
    # independent recomputation: the same leave-one-day-out windows through a default detector
    probe = DriftDetector(reference, ["x"], DriftConfig())
    ts = hist[TIME_COLUMN].to_numpy()
    matrix = hist[["x", SCORE_COLUMN]].to_numpy()
    worst = np.zeros(2)
    windows = tumbling(ts, 1000)
    for rows in windows:
        r = probe.evaluate(matrix[rows], ts=ts[rows], exclude_days=np.unique(np.floor(ts[rows] / 86400)))
        worst = np.maximum(worst, [r.features["x"].score, r.prediction.score])
    assert cal.windows == len(windows) == len(hist) // 1000
    assert cal.max_scores == pytest.approx({"x": worst[0], SCORE_COLUMN: worst[1]})
    assert cal.thresholds["x"] == pytest.approx(max(1.5 * worst[0], 0.02))
    assert cal.score_threshold == pytest.approx(max(1.5 * worst[1], 0.02))
    config = cal.drift_config(DriftConfig(per_feature_threshold={"y": 0.3}))
    assert config.per_feature_threshold == {"x": cal.thresholds["x"], "y": 0.3}  # explicit settings win
    assert cal.drift_config(DriftConfig(threshold=0.2)).per_feature_threshold == {}
    # a window twice the size has less sampling noise: a proportionally lower threshold
    k = np.sqrt((1 / 5000 + 1 / 2000) / (1 / 5000 + 1 / 1000))
    assert cal.drift_config(DriftConfig(), 2000).per_feature_threshold["x"] == pytest.approx(cal.thresholds["x"] * k)
    save(tmp_path, cal, reference)
    loaded, ref2 = load(tmp_path)
    assert loaded == cal and isinstance(loaded, Calibration)
    pd.testing.assert_frame_equal(ref2, reference, check_dtype=False)
    assert load(tmp_path / "nothing") is None


def test_the_monitor_calibrates_a_model_once_on_its_training_set_and_stores_it_next_to_the_model(tmp_path, monkeypatch):
    import json

    from core.model_store import production_model
    from monitoring.calibration import FOLDER
    from monitoring.reference import registry_reference
    from tests.fixtures.models import save_test_model, synthetic_feature_frame

    monkeypatch.setenv("RTML_STATE_DIR", str(tmp_path))
    save_test_model(n_rows=500)  # its metadata names the training set "synthetic"
    model = production_model()
    features = list(model.info.metadata["features"])
    frame, y = synthetic_feature_frame(14 * 24 * 30, seed=1, features=features)
    frame["event_time"] = pd.to_datetime(MONDAY + np.arange(len(frame)) * 120.0, unit="s", utc=True)
    frame["is_fraud"] = y
    folder = tmp_path / "training_sets" / "synthetic"
    folder.mkdir(parents=True)
    frame.to_parquet(folder / "data.parquet")
    (folder / "manifest.json").write_text(json.dumps({"features": features}))

    ref = registry_reference(window_rows=1000)
    stored = Path(model.path_of(FOLDER))
    assert (stored / "calibration.json").is_file() and (stored / "reference.parquet").is_file()
    assert ref.calibration is not None and ref.calibration.model == str(model.tag)
    assert ref.calibration.windows == len(frame) // 1000
    assert TIME_COLUMN in ref.frame.columns and len(ref.frame) == len(frame)  # < 1000 rows per hour of week
    assert ref.lineage["txn_amount"] == ["amount"]  # lineage from the feature repo, stored with it
    mtime = (stored / "calibration.json").stat().st_mtime_ns
    again = registry_reference(window_rows=1000)  # calibrated once: the stored one is reused
    assert (stored / "calibration.json").stat().st_mtime_ns == mtime and again.calibration == ref.calibration
    flat = registry_reference(window_rows=1000, calibrated=False)
    assert flat.calibration is None and TIME_COLUMN not in flat.frame.columns


def test_the_monitor_loop_matches_the_reference_by_the_records_kafka_time(tmp_path):
    """Day-time traffic replayed later (bentos.prediction_log stamps the Kafka record with the request's
    event time): quiet when the records carry their 10:00 event time, drift when they carry the hour they
    were scored at (00:55, the demo's false alert before the fix)."""
    import json

    from monitoring.metrics import MonitorMetrics
    from monitoring.monitor import Monitor, MonitorConfig
    from monitoring.reference import Reference
    from monitoring.retrain import RetrainConfig
    from monitoring.windows import WindowSpec
    from tests.monitoring.helpers import FakeConsumer, FakeRecord

    hist = _cyclic_history(14)
    day = _cyclic_history(15, per_hour=600, seed=9)
    day = day[day[TIME_COLUMN] >= MONDAY + 14 * 86400]
    window = day[(day[TIME_COLUMN] // 3600 % 24) == 10].iloc[:500]  # clean traffic of a Monday at 10:xx
    msgs = [json.dumps({"transaction_id": f"t{i}", "score": s, "features": {"x": x}}).encode()
            for i, (x, s) in enumerate(zip(window["x"], window[SCORE_COLUMN], strict=True))]
    scored_at = MONDAY + 21 * 86400 + 55 * 60  # a week later, 00:55

    def run(stamps_s) -> list[str]:
        mon = Monitor(
            MonitorConfig(window=WindowSpec(size=500), render_reports=False, retrain=RetrainConfig(enabled=False)),
            lambda: Reference(frame=hist, features=["x"], model="m:1"), tmp_path / str(len(list(tmp_path.iterdir()))),
            MonitorMetrics(),
        )
        recs = [FakeRecord("predictions", 0, i, int(t * 1000), m) for i, (t, m) in enumerate(zip(stamps_s, msgs, strict=True))]
        mon.run(FakeConsumer(recs), "predictions", None, idle_exit_s=0.0)
        assert len(mon.results) == 1
        return mon.results[0].drifted_features

    assert run(window[TIME_COLUMN].to_numpy()) == []  # event time: compared with Mondays at 10:xx
    assert run([scored_at] * len(msgs)) == ["x"]  # wall clock: compared with Mondays at 00:xx
