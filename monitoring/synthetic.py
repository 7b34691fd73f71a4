"""Synthetic prediction traffic with controllable drift, for tests, benchmarks and demos.

Rows have the fraud model's features with plausible joint structure (stream aggregates consistent
with each other, ratios computed from them, some ``secs_since_prev_txn`` missing), a score from a
fixed logistic "model", and a fraud label drawn from the same logit (or, for concept drift, from a
logit the score does not know). Drift knobs: ``amount_scale`` (every amount x k: the amount
features and aggregates shift, ratios do not), ``merchant_mix`` (risky merchants dominate),
``concept_drift`` (labels no longer follow the score: performance decays, inputs do not drift).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_FEATURES = [
    "account_age_days", "credit_limit", "risk_tier",
    "txn_count_10m", "txn_sum_10m", "txn_mean_10m", "txn_max_10m",
    "txn_count_1h", "txn_sum_1h", "txn_mean_1h", "txn_max_1h",
    "txn_count_24h", "txn_sum_24h", "txn_mean_24h", "txn_max_24h",
    "distinct_merchants_1h", "secs_since_prev_txn",
    "merchant_txn_count_1h", "merchant_amount_mean_1h",
    "txn_amount", "amount_to_mean_24h", "amount_to_credit_limit", "is_foreign", "merchant_foreign",
]  # fmt: skip


def model_features() -> list[str]:
    """The production feature list from the feature service definition, else :data:`DEFAULT_FEATURES`."""
    try:
        from core.feature_refs import ref_names, service_feature_refs

        return ref_names(service_feature_refs())
    except Exception:  # noqa: BLE001 - the generator must work without the training package
        return list(DEFAULT_FEATURES)


def feature_frame(
    n: int,
    seed: int = 0,
    features: list[str] | None = None,
    amount_scale: float = 1.0,
    merchant_mix: bool = False,
    concept_drift: bool = False,
) -> pd.DataFrame:
    """``n`` rows: ``features`` + ``score`` + ``is_fraud``."""
    features = features or list(DEFAULT_FEATURES)
    rng = np.random.default_rng(seed)
    k = amount_scale
    user_mean = rng.lognormal(3.5, 0.8, n) * k
    amount = user_mean * rng.lognormal(0.0, 0.6, n)
    c10 = 1 + rng.poisson(0.3, n)
    c1h = c10 + rng.poisson(1.0, n)
    c24 = c1h + rng.poisson(5.0, n)
    cols: dict[str, np.ndarray] = {
        "account_age_days": rng.integers(30, 3000, n).astype(float),
        "credit_limit": rng.choice([1000.0, 2000.0, 5000.0, 10000.0], n, p=[0.3, 0.3, 0.25, 0.15]),
        "risk_tier": rng.choice([0.0, 1.0, 2.0], n, p=[0.3, 0.3, 0.4] if merchant_mix else [0.7, 0.2, 0.1]),
        "txn_count_10m": c10.astype(float),
        "txn_count_1h": c1h.astype(float),
        "txn_count_24h": c24.astype(float),
        "distinct_merchants_1h": np.minimum(c1h, 1 + rng.poisson(0.8, n)).astype(float),
        "secs_since_prev_txn": np.where(rng.random(n) < 0.2, np.nan, rng.exponential(3000.0, n)),
        "txn_amount": amount,
        "is_foreign": (rng.random(n) < 0.1).astype(float),
        "merchant_foreign": (rng.random(n) < 0.05).astype(float),
    }
    for label, count in (("10m", c10), ("1h", c1h), ("24h", c24)):
        mean = user_mean * rng.lognormal(0.0, 0.25, n)
        cols[f"txn_mean_{label}"] = mean
        cols[f"txn_sum_{label}"] = mean * count
        cols[f"txn_max_{label}"] = np.maximum(mean * (1 + rng.lognormal(-1.0, 0.5, n)), amount)
    if merchant_mix:
        cols["merchant_txn_count_1h"] = rng.poisson(8.0, n).astype(float)
        cols["merchant_amount_mean_1h"] = rng.lognormal(4.6, 0.5, n) * k
    else:
        cols["merchant_txn_count_1h"] = rng.poisson(40.0, n).astype(float)
        cols["merchant_amount_mean_1h"] = rng.lognormal(3.6, 0.5, n) * k
    cols["amount_to_mean_24h"] = amount / cols["txn_mean_24h"]
    cols["amount_to_credit_limit"] = amount / cols["credit_limit"]
    for name in features:
        if name not in cols:
            cols[name] = rng.gamma(2.0, 2.0, n)
    logit = -5.0 + 2.0 * np.log(cols["amount_to_mean_24h"]) + 2.0 * cols["is_foreign"] + 0.8 * cols["risk_tier"]
    score = 1.0 / (1.0 + np.exp(-(logit + rng.normal(0.0, 0.3, n))))
    label_logit = rng.normal(-3.5, 1.0, n) if concept_drift else logit
    is_fraud = (rng.random(n) < 1.0 / (1.0 + np.exp(-label_logit))).astype(int)
    frame = pd.DataFrame({f: cols[f] for f in features})
    frame["score"] = score
    frame["is_fraud"] = is_fraud
    return frame


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prediction_messages(
    frame: pd.DataFrame,
    start_ts: float,
    rate_per_s: float = 100.0,
    features: list[str] | None = None,
    model_version: str = "synthetic",
    threshold: float = 0.5,
    id_prefix: str | None = None,
) -> list[dict[str, Any]]:
    """PREDICTION_FIELDS messages for the rows of ``frame`` (NaN features listed as missing)."""
    features = features or [c for c in frame.columns if c not in ("score", "is_fraud")]
    prefix = id_prefix or uuid.uuid4().hex[:8]
    values = frame[features].to_numpy(dtype=float)
    scores = frame["score"].to_numpy(dtype=float)
    out = []
    for i in range(len(frame)):
        row = values[i]
        feats = {f: (None if np.isnan(v) else float(v)) for f, v in zip(features, row, strict=True)}
        ts = start_ts + i / rate_per_s
        out.append(
            {
                "request_id": f"{prefix}-r{i}",
                "transaction_id": f"{prefix}-t{i}",
                "user_id": int(i % 997),
                "merchant_id": int(i % 101),
                "prediction_timestamp": _iso(ts),
                "model_name": "fraud_model",
                "model_version": model_version,
                "score": float(scores[i]),
                "decision": "review" if scores[i] >= threshold else "approve",
                "features": feats,
                "missing_features": [f for f, v in feats.items() if v is None],
                "feature_age_seconds": 1.0,
            }
        )
    return out


def label_messages(
    predictions: list[dict[str, Any]], frame: pd.DataFrame, delay_s: float = 3600.0
) -> list[dict[str, Any]]:
    """LABEL_FIELDS messages for ``predictions`` (same order as ``frame``)."""
    out = []
    for msg, is_fraud in zip(predictions, frame["is_fraud"].to_numpy(), strict=True):
        ts = datetime.fromisoformat(msg["prediction_timestamp"].replace("Z", "+00:00")).timestamp()
        out.append(
            {
                "transaction_id": msg["transaction_id"],
                "user_id": msg["user_id"],
                "merchant_id": msg["merchant_id"],
                "event_timestamp": msg["prediction_timestamp"],
                "label_timestamp": _iso(ts + delay_s),
                "is_fraud": int(is_fraud),
            }
        )
    return out
