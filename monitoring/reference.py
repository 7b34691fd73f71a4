"""The reference the monitor compares windows with: by default the production model's reference sample."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from monitoring.drift import SCORE_COLUMN


@dataclass(frozen=True)
class Reference:
    frame: pd.DataFrame  # features + score
    features: list[str]
    model: str = "unknown"  # model tag the sample belongs to
    threshold: float | None = None  # decision threshold on the score
    metrics: dict[str, Any] = field(default_factory=dict)  # the model's offline metrics (pr_auc, ...)


ReferenceLoader = Callable[[], "Reference | pd.DataFrame"]


def registry_reference() -> Reference:
    """Reference sample, feature list, threshold and metrics of the production model (training/registry.py)."""
    from core.model_store import production_model, reference_sample

    model = production_model()
    meta = model.info.metadata
    features = list(meta.get("features") or [])
    frame = reference_sample(model)
    if not features:
        features = [c for c in frame.columns if c != SCORE_COLUMN]
    threshold = meta.get("threshold")
    return Reference(
        frame=frame,
        features=features,
        model=str(model.tag),
        threshold=float(threshold) if threshold is not None else None,
        metrics=dict(meta.get("metrics") or {}),
    )


def as_reference(loaded: Reference | pd.DataFrame) -> Reference:
    """Accept a bare DataFrame (features = every column but ``score`` and ``is_fraud``)."""
    if isinstance(loaded, Reference):
        return loaded
    features = [c for c in loaded.columns if c not in (SCORE_COLUMN, "is_fraud")]
    return Reference(frame=loaded, features=features, model="dataframe")
