"""The models a prediction service holds (production plus an optional challenger) and how a request
picks one.

A :class:`Deployment` is an immutable snapshot: the feature plan (one read covering every variant's
features), the production :class:`Variant`, the challenger and the rollout mode. The service reads it
once per request, so a reload that swaps it never mixes two snapshots within a request.

Modes (from the registry's rollout, ``rtml models rollout TAG --mode ... --share ...``):

- ``shadow``: production answers; the challenger scores the same feature vector off the request path
  (in the prediction log's thread) and its score is only logged;
- ``canary``: a deterministic share of requests, by a hash of the request id, is answered by the challenger;
- ``ab``: a share of entities (the first entity key, e.g. ``user_id``) is answered by the challenger,
  always the same ones for one rollout (sticky).

Hashes are CRC-32 salted with the rollout id: stable across processes and restarts, different per rollout.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bentos import metrics
from bentos.feature_plan import FeaturePlan
from bentos.predictor import RowPredictor

log = logging.getLogger(__name__)

PRODUCTION, CHALLENGER = "production", "challenger"
MODES = ("shadow", "canary", "ab")
BUCKETS = 10_000


def decision_names(feature_service: str | None = None) -> tuple[str, str]:
    """(negative, positive) decision names of the model's label view (e.g. legit/fraud, skip/click)."""
    from core.feature_refs import label_definition

    return label_definition(feature_service or None).decisions


@dataclass(eq=False)
class Variant:
    """One loaded model and its metric children."""

    name: str
    tag: str
    booster: Any
    features: list[str]
    threshold: float
    feature_refs: list[str]
    feature_service: str
    defaults: dict[str, float]
    index: list[int] | None = None  # positions of ``features`` in the plan's row (None: the same order)
    predictor: RowPredictor | None = None
    explain_approx: bool = True
    _m: dict[str, Any] = field(default_factory=dict)
    decisions: tuple[str, str] = ("negative", "positive")  # below / at or above the threshold (the label view's)

    @property
    def model_version(self) -> str:
        return self.tag.split(":", 1)[1]

    def bind(self, name: str, plan_features: Sequence[str]) -> Variant:
        """This model as variant ``name`` of a plan with ``plan_features`` (shares booster and predictor)."""
        index = None if list(plan_features[: len(self.features)]) == self.features and len(plan_features) == len(self.features) else [
            list(plan_features).index(f) for f in self.features
        ]
        v = Variant(
            name, self.tag, self.booster, self.features, self.threshold, self.feature_refs, self.feature_service,
            self.defaults, index, self.predictor, self.explain_approx,
        )
        v.decisions = decision_names(self.feature_service)
        labels = {"variant": name, "model_version": v.model_version}
        v._m = {  # per-prediction observations added up in the worker (bentos.metrics.batched)
            "latency": metrics.batched(metrics.variant_latency_seconds.labels(**labels)),
            "score": metrics.batched(metrics.variant_score.labels(**labels)),
            **{d: metrics.batched(metrics.variant_decisions_total.labels(decision=d, **labels)) for d in v.decisions},
            "errors": metrics.variant_errors_total.labels(**labels),
        }
        return v

    def row(self, plan_row: list[float]) -> list[float]:
        index = self.index
        return plan_row if index is None else [plan_row[i] for i in index]

    def matrix(self, plan_matrix: np.ndarray) -> np.ndarray:
        """:meth:`row` of every row of a plan's input matrix."""
        return plan_matrix if self.index is None else plan_matrix[:, self.index]

    def decide(self, score: float) -> str:
        return self.decisions[score >= self.threshold]

    def observe(self, score: float, seconds: float) -> str:
        """Count one prediction in the variant's metrics; return its decision."""
        m = self._m
        decision = self.decisions[score >= self.threshold]
        m["latency"].observe(seconds)
        m["score"].observe(score)
        m[decision].inc()
        return decision

    def observe_many(self, scores: list[float], seconds: float) -> list[str]:
        """:meth:`observe` of many predictions that took ``seconds`` each; their decisions."""
        m, names, threshold = self._m, self.decisions, self.threshold
        decisions = [names[s >= threshold] for s in scores]
        m["latency"].observe_n(seconds, len(scores))
        m["score"].observe_many(scores)
        n_positive = decisions.count(names[1])
        if n_positive:
            m[names[1]].inc(n_positive)
        if len(scores) > n_positive:
            m[names[0]].inc(len(scores) - n_positive)
        return decisions

    def error(self) -> None:
        self._m["errors"].inc()

    def score_rows(self, rows: Sequence[Sequence[float]]) -> np.ndarray:
        """Scores of many rows (one call that releases the GIL): the shadow path."""
        if self.predictor is not None:
            return self.predictor.predict_rows(rows)
        return self.booster.inplace_predict(np.asarray(rows, dtype=np.float32))

    def explain(self, row: Sequence[float], top_k: int) -> list[dict[str, Any]]:
        """The ``top_k`` largest feature contributions (log-odds) to this row's score, with the values used."""
        import xgboost as xgb

        arr = np.asarray([row], dtype=np.float32)
        contribs = self.booster.predict(
            xgb.DMatrix(arr, missing=np.nan, nthread=1), pred_contribs=True, approx_contribs=self.explain_approx, validate_features=False
        )[0]
        order = np.argsort(-np.abs(contribs[:-1]), kind="stable")[:top_k]
        return [
            {"feature": self.features[i], "value": _json_float(row[i]), "contribution": float(contribs[i])}
            for i in order
        ]


def _json_float(v: float) -> float | None:
    return None if v != v or math.isinf(v) else float(v)


def load_model(tag: str, explain_approx: bool = True) -> Variant:
    """The stored model ``tag`` as an unbound :class:`Variant` (booster + single-row predictor)."""
    from core import model_store

    model = model_store.get_model(tag)
    meta = model.info.metadata
    booster = model_store.load_booster(model)
    features = list(meta["features"])
    defaults = {k: float(v) for k, v in (meta.get("defaults") or {}).items() if v is not None and not _isnan(v)}
    return Variant(
        "", str(model.tag), booster, features, float(meta["threshold"]), list(meta["feature_refs"]),
        str(meta.get("feature_service") or ""), defaults, predictor=RowPredictor(booster, len(features)),
        explain_approx=explain_approx,
    )


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


@dataclass(eq=False)
class Deployment:
    """What the service serves right now (immutable; replaced as a whole on reload)."""

    plan: FeaturePlan
    production: Variant
    challenger: Variant | None = None
    mode: str = ""
    share: float = 0.0
    rollout_id: str = ""
    id_field: str = "transaction_id"
    sticky_key: str = ""
    loaded_at: float = field(default_factory=time.time)
    _cut: int = 0
    _salt: int = 0

    def __post_init__(self) -> None:
        self.n_reads = len(self.plan.reads)
        self._cut = round(self.share * BUCKETS)
        self._salt = zlib.crc32(self.rollout_id.encode())
        if self.challenger is None:
            self.mode = ""
        self.routes = self.mode in ("canary", "ab")
        self.shadow = self.challenger if self.mode == "shadow" else None

    def bucket(self, req: dict) -> int:
        """The request's bucket in [0, 10000): by request id (canary) or by entity (A/B, sticky)."""
        key = req[self.id_field] if self.mode == "canary" else req[self.sticky_key]
        return zlib.crc32(str(key).encode(), self._salt) % BUCKETS

    def pick(self, req: dict) -> Variant:
        """The variant that answers ``req``."""
        if self.routes and self.bucket(req) < self._cut:
            return self.challenger  # type: ignore[return-value]
        return self.production

    def describe(self) -> dict[str, Any]:
        return {
            "production": self.production.tag,
            "challenger": self.challenger.tag if self.challenger else None,
            "mode": self.mode or None,
            "share": self.share if self.routes else (1.0 if self.shadow else 0.0),
            "rollout_id": self.rollout_id or None,
        }
