"""Promotion gate: a new model replaces production only if it beats it on the same holdout by a margin
(PR-AUC, default +0.005; ``RTML_PROMOTION_MARGIN`` or ``rtml train --margin``) and passes its checks."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
from sklearn.metrics import average_precision_score

from core.consistency import promotion_blockers
from core.settings import settings
from training.evaluate import Evaluation
from training.model import label_column, predict

DEFAULT_MARGIN = 0.005  # the default of settings().promotion_margin


def default_margin() -> float:
    return settings().promotion_margin


@dataclass
class Decision:
    promote: bool
    reason: str
    candidate_pr_auc: float
    production_tag: str | None = None
    production_pr_auc: float | None = None
    margin: float = DEFAULT_MARGIN

    def as_dict(self) -> dict[str, Any]:
        return {
            "promote": self.promote,
            "reason": self.reason,
            "candidate_pr_auc": self.candidate_pr_auc,
            "production_tag": self.production_tag,
            "production_pr_auc": self.production_pr_auc,
            "margin": self.margin,
        }


def production_pr_auc(model: Any, holdout: pd.DataFrame) -> tuple[float | None, str]:
    """PR-AUC of a stored model on ``holdout``; None (with the reason) if it cannot score these rows."""
    from core.model_store import load_booster

    features = list(model.info.metadata.get("features") or [])
    missing = [f for f in features if f not in holdout.columns]
    if not features or missing:
        return None, f"production model {model.tag} needs features not in this training set: {missing or 'unknown'}"
    scores = predict(load_booster(model), holdout, features)
    return float(average_precision_score(holdout[label_column()], scores)), ""


def decide(
    ev: Evaluation,
    holdout: pd.DataFrame,
    production: Any | None,
    margin: float | None = None,
    feature_refs: list[str] | None = None,
) -> Decision:
    """Should the candidate (evaluated as ``ev`` on ``holdout``) become production? Not while the online/
    offline consistency of its ``feature_refs`` is below threshold (core/consistency.py)."""
    margin = default_margin() if margin is None else margin
    cand = ev.metrics["pr_auc"]
    if not ev.passed:
        return Decision(False, "checks failed: " + "; ".join(ev.failed_checks()), cand, margin=margin)
    skew = promotion_blockers(feature_refs or [])
    if skew:
        return Decision(False, "online/offline consistency below threshold: " + "; ".join(skew), cand, margin=margin)
    if production is None:
        return Decision(True, f"first model (PR-AUC {cand:.4f}) and its checks pass", cand, margin=margin)
    tag = str(production.tag)
    prod, why = production_pr_auc(production, holdout)
    if prod is None:
        return Decision(False, why + "; compare and promote manually", cand, tag, None, margin)
    if math.isnan(cand) or cand < prod + margin:
        return Decision(
            False,
            f"PR-AUC {cand:.4f} does not beat production {tag} ({prod:.4f}) by the margin {margin:+.4f} on the same holdout",
            cand,
            tag,
            prod,
            margin,
        )
    return Decision(
        True,
        f"PR-AUC {cand:.4f} beats production {tag} ({prod:.4f}) by {cand - prod:+.4f} >= {margin:+.4f}",
        cand,
        tag,
        prod,
        margin,
    )
