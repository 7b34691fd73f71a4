"""The alert policy: which alert events a window (or the rolling performance) produces, and what they say.

- ``FeatureDrift``: at least ``min_features`` drifted features for ``windows`` consecutive windows;
  "since" is the start of the first window of the streak. The summary names the raw inputs behind
  the drifted features (:mod:`monitoring.lineage`), e.g. "amount shifted: 11 dependent features
  moved", and a feature that went missing ("users.credit_limit broken: credit_limit missing in 100%
  of rows (reference 0%)").
- ``PredictionDrift``: the model score drifted in this window.
- ``PerformanceDecay``: rolling PR-AUC (or recall) below its floor, with enough labels.

Firing, repeating and resolving per alert name: :class:`monitoring.alerts.AlertTracker`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from monitoring.alerts import Alert, AlertTracker, iso, runbook
from monitoring.drift import ColumnDrift, WindowDrift
from monitoring.lineage import Lineage
from monitoring.performance import Performance

FEATURE_DRIFT = "FeatureDrift"
PREDICTION_DRIFT = "PredictionDrift"
PERFORMANCE_DECAY = "PerformanceDecay"


@dataclass(frozen=True)
class Pending:
    """An alert event to send: name, fire/repeat/resolve, and its content."""

    name: str
    action: str
    summary: str
    details: dict[str, Any]
    severity: str


def column_details(c: ColumnDrift) -> dict[str, Any]:
    return {
        "method": c.method,
        "score": c.score,
        "threshold": c.threshold,
        "missing_rate": c.missing_rate,
        "reference_missing_rate": c.reference_missing_rate,
        "missing_drift": c.missing_drift,
    }


def root_causes(r: WindowDrift, lineage: Lineage) -> list[dict[str, Any]]:
    """Drifted features grouped under the raw inputs they are computed from (largest group first)."""
    return [{"input": root, "features": members} for root, members in lineage.explain(r.drifted_features)]


def describe_cause(cause: dict[str, Any], r: WindowDrift) -> str:
    """One line per raw input: what moved."""
    root, members = cause["input"], cause["features"]
    gone = [f for f in members if r.features[f].missing_drift]
    parts = []
    if gone:
        c = r.features[gone[0]]
        parts.append(
            f"{root} broken: {', '.join(gone)} missing in {c.missing_rate:.0%} of rows "
            f"(reference {c.reference_missing_rate:.0%})"
        )
    moved = [f for f in members if f not in gone]
    if moved:
        noun = "feature" if len(moved) == 1 else "features"
        head = ", ".join(moved[:4]) + (", ..." if len(moved) > 4 else "")
        parts.append(f"{root} shifted: {len(moved)} dependent {noun} moved ({head})")
    return "; ".join(parts)


def summarize_causes(causes: list[dict[str, Any]], r: WindowDrift) -> str:
    """Raw inputs first; features without known lineage (their own input) in one phrase at the end."""
    lines = [describe_cause(c, r) for c in causes if c["features"] != [c["input"]] or r.features[c["input"]].missing_drift]
    alone = [c["input"] for c in causes if c["features"] == [c["input"]] and not r.features[c["input"]].missing_drift]
    if alone:
        noun = "feature" if len(alone) == 1 else "features"
        lines.append(f"{len(alone)} {noun} moved ({', '.join(alone[:6])}{', ...' if len(alone) > 6 else ''})")
    return "; ".join(lines)


class AlertPolicy:
    """Turns window results into alert events; its streak and the tracker's states are persisted."""

    def __init__(
        self,
        tracker: AlertTracker,
        lineage: Lineage,
        min_features: int = 1,
        windows: int = 1,
        streak: int = 0,
        streak_start: float = 0.0,
    ) -> None:
        self.tracker = tracker
        self.lineage = lineage
        self.min_features = min_features
        self.windows = windows
        self.streak = streak
        self.streak_start = streak_start

    def active(self, *names: str) -> bool:
        return any(self.tracker.states.get(n) is not None and self.tracker.states[n].active for n in names)

    def on_window(self, r: WindowDrift, model: str) -> list[Pending]:
        out = []
        drifted = r.drifted_features
        if len(drifted) >= self.min_features:
            if self.streak == 0:
                self.streak_start = r.start  # "since when": the first drifted window of the streak
            self.streak += 1
        else:
            self.streak = 0
        action = self.tracker.update(FEATURE_DRIFT, self.streak >= self.windows, self.streak_start)
        if action:
            out.append(self._feature(action, r, model))
        action = self.tracker.update(PREDICTION_DRIFT, r.prediction.detected, r.start)
        if action:
            c = r.prediction
            summary = (
                f"model score drifted: {c.method} {c.score:.3f} >= {c.threshold:.3g} "
                f"(window {r.window_id}, {r.n_rows} rows)"
            )
            details = {**window_details(r, model), "score": column_details(c)}
            out.append(Pending(PREDICTION_DRIFT, action, summary, details, "warning"))
        return out

    def _feature(self, action: str, r: WindowDrift, model: str) -> Pending:
        drifted = r.drifted_features
        tested = sum(c.tested for c in r.features.values())
        causes = root_causes(r, self.lineage)
        summary = (
            summarize_causes(causes, r)
            + f" ({len(drifted)} of {tested} features drifted, share {r.drift_share:.2f}, window {r.window_id})"
        )
        details = {
            **window_details(r, model),
            "root_causes": causes,
            "drifted_features": {f: column_details(r.features[f]) for f in drifted},
            "drift_share": r.drift_share,
            "dataset_drift": r.dataset_drift,
        }
        return Pending(FEATURE_DRIFT, action, summary, details, "critical" if r.dataset_drift else "warning")

    def on_performance(self, low: bool, detail: str, perf: Performance | None, since: float, extra: dict[str, Any]) -> Pending | None:
        action = self.tracker.update(PERFORMANCE_DECAY, low, since)
        if not action:
            return None
        summary = f"model performance decayed: {detail} on the last {perf.n if perf else 0} labelled predictions"
        details = dict(extra)
        if perf is not None:
            details.update(
                precision=perf.precision, recall=perf.recall, pr_auc=perf.pr_auc, labelled=perf.n, positives=perf.positives
            )
        return Pending(PERFORMANCE_DECAY, action, summary, details, "critical")

    def message(self, p: Pending, report: str, model: str, window_id: int) -> Alert:
        """The event on the wire (a resolve says only that)."""
        st = self.tracker.states[p.name]
        summary, details, severity = p.summary, p.details, p.severity
        if p.action == "resolve":
            severity, summary, details = "resolved", f"{p.name} resolved", {"model": model, "window_id": window_id}
        details = {**details, "action": p.action, "windows_since_start": st.windows}
        return Alert(p.name, severity, iso(st.started_at), summary, details, report, runbook(p.name))


def window_details(r: WindowDrift, model: str) -> dict[str, Any]:
    return {
        "model": model,
        "window_id": r.window_id,
        "window_rows": r.n_rows,
        "window_start": iso(r.start),
        "window_end": iso(r.end),
    }
