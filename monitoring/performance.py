"""Rolling model performance from predictions joined with late labels by transaction_id."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score


@dataclass(frozen=True)
class Performance:
    precision: float
    recall: float
    pr_auc: float
    n: int
    positives: int


class PerformanceTracker:
    """Keeps the scores of recent predictions until their label arrives (bounded), and the last
    ``window`` labelled (score, label) pairs. A label that arrives before its prediction waits too.

    What waits is part of the monitor's saved state (:meth:`to_state`), saved before the consumer commits
    its offsets: a restart loses no join whose label comes later. The ids joined recently are kept too
    (bounded), so a prediction or label read again after a restart is not joined twice."""

    def __init__(self, window: int = 5000, threshold: float = 0.5, max_pending: int = 200_000) -> None:
        self.window = window
        self.threshold = threshold
        self.max_pending = max_pending
        self._scores: OrderedDict[str, float] = OrderedDict()
        self._early_labels: OrderedDict[str, int] = OrderedDict()
        self.pairs: deque[tuple[float, int]] = deque(maxlen=window)
        self.labelled = 0  # pairs joined so far (ever)
        self._joined: OrderedDict[str, None] = OrderedDict()

    def _join(self, transaction_id: str, score: float, label: int) -> None:
        self.pairs.append((score, label))
        self.labelled += 1
        self._joined[transaction_id] = None
        if len(self._joined) > self.max_pending:
            self._joined.popitem(last=False)

    def to_state(self) -> dict:
        """What waits for its other half, and the ids joined recently, ready to encode as JSON right away (the
        mappings are the tracker's own, not copies: up to ``max_pending`` entries each, saved after every window)."""
        return {"scores": self._scores, "early_labels": self._early_labels, "joined": list(self._joined)}

    def load_state(self, state: dict) -> None:
        self._scores.update((str(k), float(v)) for k, v in (state.get("scores") or {}).items())
        self._early_labels.update((str(k), int(v)) for k, v in (state.get("early_labels") or {}).items())
        self._joined.update((str(k), None) for k in state.get("joined") or [])

    def add_prediction(self, transaction_id: str, score: float) -> None:
        if transaction_id in self._joined:  # read again after a restart: joined already
            return
        label = self._early_labels.pop(transaction_id, None) if self._early_labels else None
        if label is not None:
            self._join(transaction_id, score, label)
            return
        self._scores[transaction_id] = score
        if len(self._scores) > self.max_pending:
            self._scores.popitem(last=False)

    def add_label(self, transaction_id: str, is_fraud: int) -> None:
        if transaction_id in self._joined:
            return
        score = self._scores.pop(transaction_id, None)
        if score is not None:
            self._join(transaction_id, score, is_fraud)
            return
        self._early_labels[transaction_id] = is_fraud
        if len(self._early_labels) > self.max_pending:
            self._early_labels.popitem(last=False)

    def metrics(self) -> Performance | None:
        """Precision/recall at ``threshold`` and PR-AUC (average precision); None without labels of both classes."""
        if not self.pairs:
            return None
        arr = np.asarray(self.pairs, dtype=float)
        scores, labels = arr[:, 0], arr[:, 1].astype(int)
        positives = int(labels.sum())
        if positives == 0 or positives == len(labels):
            return None
        flagged = scores >= self.threshold
        tp = int((flagged & (labels == 1)).sum())
        precision = tp / int(flagged.sum()) if flagged.any() else 0.0
        recall = tp / positives
        return Performance(precision, recall, float(average_precision_score(labels, scores)), len(labels), positives)
