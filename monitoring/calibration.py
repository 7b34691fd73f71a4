"""Drift thresholds calibrated once per model on clean history, stored next to the model.

The clean history is the model's training period (its training set, scored by the model). It is
replayed as time-ordered windows of the monitor's size; each window is compared with a seasonal
reference drawn from the other days of the period (leave-one-day-out: a window is never compared
with itself). Per column, the threshold is ``margin`` x the largest drift score any clean window
reached (at least ``min_threshold``), and the missing-rate tolerance is ``margin`` x the largest
rise of the missing rate (at least ``min_missing_tolerance``). With the seasonal reference this
is what makes the defaults quiet on ordinary daily and weekly cycles while staying sensitive.

Stored in the model's folder of the model store: ``monitoring/calibration.json`` (thresholds,
tolerances, window size, the feature lineage) and ``monitoring/reference.parquet`` (the seasonal
reference: features + score + event_timestamp, at most ``max_rows_per_slot`` rows per hour of week).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from monitoring.drift import SCORE_COLUMN, TIME_COLUMN, DriftConfig, DriftDetector, _epoch_seconds

log = logging.getLogger(__name__)

FOLDER = "monitoring"
CALIBRATION_FILE = "calibration.json"
REFERENCE_FILE = "reference.parquet"
DEFAULT_MARGIN = 1.5
MIN_THRESHOLD = 0.02
MIN_MISSING_TOLERANCE = 0.02


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured; :meth:`drift_config` turns it into the monitor's defaults."""

    thresholds: dict[str, float]  # feature -> drift threshold
    score_threshold: float
    missing_tolerance: dict[str, float]
    window_rows: int
    reference_rows: int  # reference rows drawn per window
    margin: float
    windows: int  # clean windows measured
    max_scores: dict[str, float]  # the largest clean score per column (score included)
    lineage: dict[str, list[str]] = field(default_factory=dict)
    history: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    created_at: str = ""

    def noise_scale(self, window_rows: int) -> float:
        """Sampling noise of a window of ``window_rows`` relative to the calibrated size."""
        if window_rows <= 0 or window_rows == self.window_rows:
            return 1.0
        r = self.reference_rows
        return math.sqrt((1 / r + 1 / window_rows) / (1 / r + 1 / self.window_rows))

    def drift_config(self, base: DriftConfig, window_rows: int | None = None) -> DriftConfig:
        """``base`` with the calibrated thresholds and tolerances; thresholds the user set explicitly win."""
        k = self.noise_scale(window_rows or self.window_rows)
        thresholds = {f: t * k for f, t in self.thresholds.items()} if base.threshold is None else {}
        return replace(
            base,
            per_feature_threshold={**thresholds, **base.per_feature_threshold},
            score_threshold=base.score_threshold if base.score_threshold is not None else self.score_threshold * k,
            per_feature_missing_tolerance={**self.missing_tolerance, **base.per_feature_missing_tolerance},
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        return cls(**json.loads(text))


def tumbling(ts: np.ndarray, size: int) -> list[np.ndarray]:
    """Row indexes of time-ordered tumbling windows of ``size`` rows (the incomplete last one dropped)."""
    order = np.argsort(ts, kind="stable")
    return [order[i : i + size] for i in range(0, len(order) - size + 1, size)]


def calibrate(
    history: pd.DataFrame,
    features: list[str],
    window_rows: int = 5000,
    config: DriftConfig | None = None,
    margin: float = DEFAULT_MARGIN,
    lineage: dict[str, list[str]] | None = None,
    model: str = "",
) -> tuple[Calibration, pd.DataFrame]:
    """Calibrate on ``history`` (features + score + event_timestamp, clean); returns the calibration
    and the seasonal reference to store with it."""
    config = config or DriftConfig()
    cols = [*features, SCORE_COLUMN]
    frame = history[[*cols, TIME_COLUMN]].reset_index(drop=True)
    ts = _epoch_seconds(frame[TIME_COLUMN])
    # the windows are compared with the reference the monitor will use (thinned to the stored size);
    # every column is tested with its method's default threshold: only the scores are kept here
    full = DriftDetector(frame, features, replace(config, per_feature_threshold={}, threshold=None, score_threshold=None))
    assert full.seasonal is not None
    reference = frame.iloc[full.seasonal.thin()].reset_index(drop=True)
    probe = DriftDetector(reference, features, full.config)
    matrix = full._matrix
    days = np.floor(ts / 86400.0).astype(np.int64)
    windows = tumbling(ts, window_rows)
    if len(windows) < 3:
        raise ValueError(f"calibration needs at least 3 windows of {window_rows} rows; the history has {len(frame)} rows")
    scores = np.full((len(windows), len(cols)), np.nan)
    missing = np.zeros((len(windows), len(cols)))
    for k, rows in enumerate(windows):
        result = probe.evaluate(matrix[rows], ts=ts[rows], exclude_days=np.unique(days[rows]))
        for j, c in enumerate([*result.features.values(), result.prediction]):
            scores[k, j] = c.score
            missing[k, j] = max(0.0, c.missing_rate - c.reference_missing_rate)
    with np.errstate(all="ignore"):
        max_scores = np.nanmax(np.where(np.isnan(scores), -np.inf, scores), axis=0)
    max_scores = np.where(np.isfinite(max_scores), max_scores, 0.0)
    thresholds = np.maximum(margin * max_scores, MIN_THRESHOLD)
    tolerance = np.maximum(margin * missing.max(axis=0), MIN_MISSING_TOLERANCE)
    calibration = Calibration(
        thresholds={f: float(thresholds[i]) for i, f in enumerate(features)},
        score_threshold=float(thresholds[-1]),
        missing_tolerance={f: float(tolerance[i]) for i, f in enumerate(features)},
        window_rows=window_rows,
        reference_rows=config.seasonal.rows,
        margin=margin,
        windows=len(windows),
        max_scores={c: float(max_scores[i]) for i, c in enumerate(cols)},
        lineage=lineage or {},
        history={
            "rows": len(frame),
            "start": datetime.fromtimestamp(float(ts.min()), UTC).isoformat(timespec="seconds"),
            "end": datetime.fromtimestamp(float(ts.max()), UTC).isoformat(timespec="seconds"),
            "reference_rows_stored": len(reference),
        },
        model=model,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    return calibration, reference


def save(directory: Path, calibration: Calibration, reference: pd.DataFrame) -> Path:
    """Write ``calibration.json`` and ``reference.parquet`` into ``directory`` (the model's ``monitoring/``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    reference.to_parquet(directory / REFERENCE_FILE, index=False, coerce_timestamps="us", allow_truncated_timestamps=True)
    tmp = directory / (CALIBRATION_FILE + ".tmp")
    tmp.write_text(calibration.to_json() + "\n")
    tmp.replace(directory / CALIBRATION_FILE)  # written last: its presence means the folder is complete
    return directory


def load(directory: Path) -> tuple[Calibration, pd.DataFrame] | None:
    """The stored calibration and seasonal reference, or None when the model has none yet."""
    directory = Path(directory)
    path = directory / CALIBRATION_FILE
    if not path.exists() or not (directory / REFERENCE_FILE).exists():
        return None
    return Calibration.from_json(path.read_text()), pd.read_parquet(directory / REFERENCE_FILE)
