"""The reference the monitor compares windows with: by default the production model's reference sample."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from monitoring.calibration import Calibration
from monitoring.drift import SCORE_COLUMN


@dataclass(frozen=True)
class Reference:
    frame: pd.DataFrame  # features + score
    features: list[str]
    model: str = "unknown"  # model tag the sample belongs to
    threshold: float | None = None  # decision threshold on the score
    metrics: dict[str, Any] = field(default_factory=dict)  # the model's offline metrics (pr_auc, ...)
    calibration: Calibration | None = None  # thresholds measured on clean history (monitoring.calibration)
    lineage: dict[str, list[str]] = field(default_factory=dict)  # feature -> raw inputs (monitoring.lineage)


ReferenceLoader = Callable[[], "Reference | pd.DataFrame"]


ModelReferenceLoader = Callable[[str], "Reference | pd.DataFrame"]  # model tag -> that model's reference


def registry_reference(window_rows: int = 5000, calibrated: bool = True, tag: str | None = None) -> Reference:
    """The reference of model ``tag`` (default: the production model): with its calibration (calibrated
    once if it has none), the seasonal reference and calibrated thresholds; else its plain reference
    sample (core/model_store.py)."""
    from core.model_store import get_model, production_model, reference_sample
    from monitoring.calibrate_model import ensure_calibration

    model = get_model(tag) if tag else production_model()
    meta = model.info.metadata
    stored = ensure_calibration(model, window_rows) if calibrated else None
    calibration, frame = stored if stored is not None else (None, reference_sample(model))
    features = list(meta.get("features") or [])
    if not features:
        features = [c for c in frame.columns if c != SCORE_COLUMN]
    threshold = meta.get("threshold")
    return Reference(
        frame=frame,
        features=features,
        model=str(model.tag),
        threshold=float(threshold) if threshold is not None else None,
        metrics=dict(meta.get("metrics") or {}),
        calibration=calibration,
        lineage=calibration.lineage if calibration is not None else {},
    )


def registry_loaders(window_rows: int = 5000, calibrated: bool = True) -> tuple[ReferenceLoader, ModelReferenceLoader]:
    """The monitor's loaders over the registry: the production model's reference (at start), and any
    model's by tag (the model each prediction record names)."""

    def production() -> Reference:
        return registry_reference(window_rows, calibrated)

    def by_tag(tag: str) -> Reference:
        return registry_reference(window_rows, calibrated, tag=tag)

    return production, by_tag


def as_reference(loaded: Reference | pd.DataFrame) -> Reference:
    """Accept a bare DataFrame (features = every column but ``score`` and ``is_fraud``)."""
    if isinstance(loaded, Reference):
        return loaded
    features = [c for c in loaded.columns if c not in (SCORE_COLUMN, "is_fraud")]
    return Reference(frame=loaded, features=features, model="dataframe")
