"""Drift statistics of one window against the production model's reference sample.

The statistics are Evidently's own drift tests (``evidently.legacy.calculations.stattests``, the
functions behind ``ValueDrift`` / ``DataDriftPreset``), called directly per column: a full
``Report`` costs seconds per window, these cost milliseconds. The HTML ``Report`` is rendered only
for drifted windows and the latest one (:mod:`monitoring.reports`), with the same method and
threshold per column, so the report and the gauges agree.

Defaults fit windows of thousands of rows: Evidently's K-S / chi-square p-value tests flag almost
every column at n=5000 (tiny, irrelevant shifts are "significant"), so continuous columns use the
normed Wasserstein distance and discrete ones (<= ``discrete_max_unique`` values in the reference)
the Jensen-Shannon distance, with Evidently's default threshold 0.1. The Wasserstein distance of two
samples of the same distribution is not 0 but ~ sqrt(1/n_ref + 1/n_window) (sampling noise; measured
mean 0.035, max 0.107 over 40 no-drift windows of 2000 rows vs 5000 reference rows), so unless a
threshold is configured the Wasserstein threshold is ``max(0.1, noise_margin * sqrt(1/n_ref + 1/n_window))``.
Any registered Evidently method name (``psi``, ``ks``, ``kl_div``, ...) and threshold can be
configured globally or per feature; a configured threshold is used as is (the monitor configures the
thresholds calibrated for the production model, :mod:`monitoring.calibration`).

Seasonality: when the reference sample carries each row's event time (``event_timestamp``) and the
window's row times are given, every window is compared with reference rows from the same hours of
the week (:mod:`monitoring.seasonal`), so the daily and weekly cycles do not read as drift.

Missing values: a column whose missing rate rises by more than its tolerance above the (matched)
reference's is flagged too (``missing_drift``), also when too few values are left to test its
distribution: a broken upstream that nulls a feature is drift, not an untested column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from evidently.legacy.calculations.stattests import StatTest
from evidently.legacy.calculations.stattests.registry import get_registered_stattest
from evidently.legacy.core import ColumnType

from monitoring.seasonal import SeasonalConfig, SeasonalReference, window_seed

SCORE_COLUMN = "score"
TIME_COLUMN = "event_timestamp"  # optional in the reference: enables the seasonal reference


@dataclass(frozen=True)
class DriftConfig:
    """How a window is compared with the reference."""

    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    threshold: float | None = None  # None: each method's Evidently default
    per_feature_method: dict[str, str] = field(default_factory=dict)
    per_feature_threshold: dict[str, float] = field(default_factory=dict)
    score_method: str = "wasserstein"
    score_threshold: float | None = None
    drift_share: float = 0.3  # share of drifted features above which the window counts as drifted
    discrete_max_unique: int = 5
    min_rows: int = 50  # non-missing rows a column needs in the window to be tested
    noise_margin: float = 6.0  # auto Wasserstein threshold = max(default, margin * sqrt(1/n_ref + 1/n_cur))
    missing_tolerance: float = 0.2  # missing-rate rise over the reference's that flags a column
    per_feature_missing_tolerance: dict[str, float] = field(default_factory=dict)
    seasonal: SeasonalConfig = field(default_factory=SeasonalConfig)


@dataclass(frozen=True)
class ColumnDrift:
    """Drift of one column in one window."""

    column: str
    method: str
    threshold: float
    score: float  # nan when the column had too few non-missing values
    detected: bool
    missing_rate: float
    n: int  # non-missing rows in the window
    reference_missing_rate: float = 0.0
    missing_drift: bool = False  # the missing rate rose above the reference's by more than the tolerance

    @property
    def tested(self) -> bool:
        return not math.isnan(self.score) or self.missing_drift


@dataclass(frozen=True)
class WindowDrift:
    """Result of one window."""

    window_id: int
    start: float  # event time (epoch s) of the first and last row
    end: float
    n_rows: int
    features: dict[str, ColumnDrift]
    prediction: ColumnDrift
    drift_share: float  # drifted / tested features
    dataset_drift: bool  # drift_share >= config.drift_share
    eval_seconds: float = 0.0

    @property
    def drifted_features(self) -> list[str]:
        """Drifted features, the most drifted (score / threshold) first."""
        drifted = [c for c in self.features.values() if c.detected]
        drifted.sort(key=lambda c: -_severity(c))
        return [c.column for c in drifted]

    @property
    def any_drift(self) -> bool:
        return bool(self.drifted_features) or self.prediction.detected


def _severity(c: ColumnDrift) -> float:
    if math.isnan(c.score):
        return math.inf if c.missing_drift else 0.0
    return c.score / c.threshold if c.threshold else c.score


@dataclass(frozen=True)
class _RefColumn:
    name: str
    values: pd.Series  # non-missing reference values
    kind: ColumnType
    stattest: StatTest
    threshold: float
    auto: bool  # threshold grows with the sampling noise of small samples


class DriftDetector:
    """Compares windows with one reference sample; the reference side is prepared once.

    With an ``event_timestamp`` column in the reference, :meth:`evaluate` given the window's row times
    draws a reference matched to the window's hours of the week (:class:`SeasonalReference`)."""

    def __init__(self, reference: pd.DataFrame, features: list[str], config: DriftConfig | None = None) -> None:
        self.config = config or DriftConfig()
        absent = [c for c in [*features, SCORE_COLUMN] if c not in reference.columns]
        if absent:
            raise ValueError(f"reference sample lacks columns {absent}")
        if len(reference) == 0:
            raise ValueError("reference sample is empty")
        self.features = list(features)
        self.reference = reference
        self._columns = {f: self._prepare(f, self.config.per_feature_method.get(f)) for f in self.features}
        self._score = self._prepare(SCORE_COLUMN, self.config.score_method, self.config.score_threshold)
        cols = [*self.features, SCORE_COLUMN]
        self._matrix = reference[cols].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        self._missing = np.isnan(self._matrix).mean(axis=0)
        self.seasonal: SeasonalReference | None = None
        if TIME_COLUMN in reference.columns:
            ts = _epoch_seconds(reference[TIME_COLUMN])
            self.seasonal = SeasonalReference(self._matrix, ts, self.config.seasonal)
        self.last_reference_rows: np.ndarray | None = None  # rows of the reference the last window was compared with

    def _prepare(self, name: str, method: str | None, threshold: float | None = None) -> _RefColumn:
        values = pd.to_numeric(self.reference[name], errors="coerce").astype(float).dropna().reset_index(drop=True)
        discrete = values.nunique() <= self.config.discrete_max_unique
        kind = ColumnType.Categorical if discrete else ColumnType.Numerical
        if method is None:
            method = self.config.cat_method if discrete else self.config.num_method
        stattest = get_registered_stattest(method, kind)
        if threshold is None and name != SCORE_COLUMN:
            threshold = self.config.per_feature_threshold.get(name, self.config.threshold)
        auto = threshold is None and stattest.name == "wasserstein"
        return _RefColumn(
            name, values, kind, stattest, stattest.default_threshold if threshold is None else threshold, auto
        )

    def threshold_for(self, ref: _RefColumn, n_current: int) -> float:
        if not ref.auto or n_current == 0 or len(ref.values) == 0:
            return ref.threshold
        noise = math.sqrt(1.0 / len(ref.values) + 1.0 / n_current)
        return max(ref.threshold, self.config.noise_margin * noise)

    def methods(self, n_current: int | None = None) -> dict[str, tuple[str, float]]:
        """Column -> (Evidently method name, threshold for a window of ``n_current`` rows), features and ``score``."""
        cols = [*self._columns.values(), self._score]
        return {c.name: (c.stattest.name, self.threshold_for(c, n_current or 0)) for c in cols}

    def categorical_columns(self) -> dict[str, bool]:
        """Column -> True when it is tested as discrete/categorical."""
        cols = [*self._columns.values(), self._score]
        return {c.name: c.kind == ColumnType.Categorical for c in cols}

    def missing_tolerance(self, name: str) -> float:
        return self.config.per_feature_missing_tolerance.get(name, self.config.missing_tolerance)

    def _test(
        self, ref: _RefColumn, current: np.ndarray, ref_values: np.ndarray | None = None, ref_missing: float = 0.0
    ) -> ColumnDrift:
        n_total = len(current)
        present = current[~np.isnan(current)]
        missing = 1.0 - len(present) / n_total if n_total else 0.0
        missing_drift = n_total > 0 and missing - ref_missing > self.missing_tolerance(ref.name)
        values = ref.values if ref_values is None else pd.Series(ref_values[~np.isnan(ref_values)])
        threshold = self.threshold_for(ref, len(present))
        if len(present) < self.config.min_rows or len(values) == 0:
            return ColumnDrift(
                ref.name, ref.stattest.name, threshold, math.nan, missing_drift, missing, len(present), ref_missing,
                missing_drift,
            )
        result = ref.stattest(values, pd.Series(present), ref.kind, threshold)
        score = float(result.drift_score)
        detected = bool(result.drifted) or missing_drift
        return ColumnDrift(
            ref.name, ref.stattest.name, threshold, score, detected, missing, len(present), ref_missing, missing_drift
        )

    def reference_rows(self, ts: np.ndarray | None, exclude_days: np.ndarray | None = None) -> np.ndarray | None:
        """Reference row indexes matched to the hours of the week of ``ts`` (None: the whole sample)."""
        if self.seasonal is None or ts is None or len(ts) == 0:
            return None
        return self.seasonal.match(ts, exclude_days, seed=window_seed(ts))

    def reference_frame(self, rows: np.ndarray | None) -> pd.DataFrame:
        """The reference rows a window was compared with (features + score)."""
        cols = [*self.features, SCORE_COLUMN]
        return self.reference[cols] if rows is None else pd.DataFrame(self._matrix[rows], columns=cols)

    def evaluate(
        self,
        window: pd.DataFrame | np.ndarray,
        start: float = 0.0,
        end: float = 0.0,
        window_id: int = 0,
        ts: np.ndarray | None = None,
        exclude_days: np.ndarray | None = None,
    ) -> WindowDrift:
        """Drift of ``window`` (DataFrame with the features + ``score``, or a float matrix in
        ``features + [score]`` column order; missing values as NaN). ``ts``: the rows' event times
        (epoch s), which select a seasonal reference when the reference sample has event times."""
        if isinstance(window, pd.DataFrame):
            # Absent columns become all-missing (missing_rate 1.0, not tested).
            cols = [*self.features, SCORE_COLUMN]
            matrix = window.reindex(columns=cols).apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
        else:
            matrix = np.asarray(window, dtype=float)
        rows = self.reference_rows(ts, exclude_days)
        self.last_reference_rows = rows
        if rows is None:
            ref_matrix, ref_missing = None, self._missing
        else:
            ref_matrix = self._matrix[rows]
            ref_missing = np.isnan(ref_matrix).mean(axis=0)
        columns = [*self._columns.values(), self._score]
        tests = [
            self._test(ref, matrix[:, i], None if ref_matrix is None else ref_matrix[:, i], float(ref_missing[i]))
            for i, ref in enumerate(columns)
        ]
        features = {c.column: c for c in tests[:-1]}
        prediction = tests[-1]
        tested = [c for c in features.values() if c.tested]
        share = sum(c.detected for c in tested) / len(tested) if tested else 0.0
        return WindowDrift(
            window_id=window_id,
            start=start,
            end=end,
            n_rows=len(matrix),
            features=features,
            prediction=prediction,
            drift_share=share,
            dataset_drift=share >= self.config.drift_share and bool(tested),
        )


def _epoch_seconds(values: pd.Series) -> np.ndarray:
    """Event times as epoch seconds (datetimes of any unit/zone, or numbers already in seconds)."""
    if pd.api.types.is_numeric_dtype(values):
        return values.to_numpy(dtype=float)
    ts = pd.to_datetime(values, utc=True)
    return ts.astype("int64").to_numpy() / 10 ** _unit_digits(ts)


def _unit_digits(ts: pd.Series) -> int:
    unit = getattr(ts.dtype, "unit", "ns")
    return {"s": 0, "ms": 3, "us": 6, "ns": 9}[unit]
