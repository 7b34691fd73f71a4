"""Evaluation of a fraud model on its time-based holdout: metrics, segments, robustness, importance,
checks, and a Markdown report with PNG plots (matplotlib Agg)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xgboost as xgb  # noqa: E402
from sklearn.calibration import calibration_curve  # noqa: E402
from sklearn.metrics import average_precision_score, brier_score_loss, precision_recall_curve, roc_auc_score, roc_curve  # noqa: E402

from training.datasets import frame_columns  # noqa: E402
from training.model import NTHREAD, label_column, predict  # noqa: E402

TARGET_FPR = 0.01
MIN_SEGMENT_ROWS = 30
NOISE_LEVELS = (0.05, 0.2)


def recall_at_fpr(y: np.ndarray, scores: np.ndarray, fpr_target: float = TARGET_FPR) -> float:
    """Highest recall reachable with false-positive rate <= ``fpr_target``."""
    fpr, tpr, _ = roc_curve(y, scores)
    ok = fpr <= fpr_target
    return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_at_fpr(y: np.ndarray, scores: np.ndarray, fpr_target: float = TARGET_FPR) -> float:
    """Score threshold whose false-positive rate on (y, scores) is at most ``fpr_target``."""
    negatives = np.sort(scores[y == 0])
    if len(negatives) == 0:
        return 0.5
    k = int(math.floor(len(negatives) * (1 - fpr_target)))
    k = min(max(k, 0), len(negatives) - 1)
    # strictly above the k-th negative: at most len - k - 1 negatives pass
    return float(np.nextafter(negatives[k], np.float32(np.inf)))


def core_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    flagged = scores >= threshold
    pos, neg = y == 1, y == 0
    both = pos.any() and neg.any()
    return {
        "rows": int(len(y)),
        "positives": int(pos.sum()),
        "base_rate": float(pos.mean()) if len(y) else float("nan"),
        "roc_auc": float(roc_auc_score(y, scores)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, scores)) if both else float("nan"),
        "recall_at_1pct_fpr": recall_at_fpr(y, scores) if both else float("nan"),
        "recall_at_threshold": float(flagged[pos].mean()) if pos.any() else float("nan"),
        "fpr_at_threshold": float(flagged[neg].mean()) if neg.any() else float("nan"),
        "precision_at_threshold": float(y[flagged].mean()) if flagged.any() else float("nan"),
        "brier": float(brier_score_loss(y, scores)) if len(y) else float("nan"),
    }


@dataclass
class Evaluation:
    metrics: dict[str, float]
    threshold: float
    segments: dict[str, list[dict[str, Any]]]
    gaps: list[str]
    robustness: dict[str, float]
    importance: pd.DataFrame
    calibration: dict[str, list[float]]
    checks: dict[str, dict[str, Any]]
    plots: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c["ok"] for c in self.checks.values())

    def failed_checks(self) -> list[str]:
        return [f"{name}: {c['detail']}" for name, c in self.checks.items() if not c["ok"]]

    def summary(self) -> dict[str, Any]:
        """JSON-able summary stored as model metadata."""
        out = {k: _num(v) for k, v in self.metrics.items()}
        out["threshold"] = self.threshold
        out["robustness"] = {k: _num(v) for k, v in self.robustness.items()}
        out["checks_passed"] = self.passed
        out["gaps"] = self.gaps
        return out


def _num(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def segment_metrics(
    df: pd.DataFrame, scores: np.ndarray, threshold: float, overall_recall: float
) -> tuple[dict, list[str]]:
    """Metrics per value of each segment column (values with enough rows), and the notable gaps."""
    out: dict[str, list[dict[str, Any]]] = {}
    gaps = []
    y = df[label_column()].to_numpy()
    for col in frame_columns().segments:
        label = col.replace("_", " ")
        if col not in df:
            continue
        rows = []
        values = df[col].fillna("<missing>").astype(str).to_numpy()
        for value in sorted(set(values)):
            m = values == value
            if m.sum() < MIN_SEGMENT_ROWS:
                continue
            met = core_metrics(y[m], scores[m], threshold)
            rows.append({"segment": value, **{k: _num(v) for k, v in met.items()}})
            rec = met["recall_at_threshold"]
            if met["positives"] >= 5 and not math.isnan(rec) and rec < overall_recall - 0.2:
                gaps.append(
                    f"{label} {value}: recall {rec:.2f} vs {overall_recall:.2f} overall ({met['positives']} positives)"
                )
        out[col] = rows
    return out, gaps


def robustness(
    booster: xgb.Booster, df: pd.DataFrame, features: list[str], feature_refs: list[str], seed: int
) -> dict[str, float]:
    """PR-AUC under multiplicative Gaussian noise and with whole feature views missing (NaN)."""
    y = df[label_column()].to_numpy()
    out = {}
    rng = np.random.default_rng(seed)
    X = df[features].astype("float64")
    continuous = [f for f in features if X[f].nunique(dropna=True) > 2]
    for level in NOISE_LEVELS:
        noisy = X.copy()
        noisy[continuous] = noisy[continuous] * (1 + rng.normal(0, level, (len(X), len(continuous))))
        out[f"pr_auc_noise_{int(level * 100)}pct"] = float(
            average_precision_score(y, predict(booster, noisy, features))
        )
    views: dict[str, list[str]] = {}
    for ref in feature_refs:
        view, name = ref.split(":", 1)
        views.setdefault(view, []).append(name)
    for view, names in views.items():
        missing = X.copy()
        missing[names] = np.nan
        out[f"pr_auc_missing_{view}"] = float(average_precision_score(y, predict(booster, missing, features)))
    return out


def importance(booster: xgb.Booster, df: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """Total gain per feature and mean |SHAP| (``pred_contribs=True``) on the holdout."""
    gain = booster.get_score(importance_type="total_gain")
    d = xgb.DMatrix(df[features].astype("float64"), feature_names=features, nthread=NTHREAD)
    contribs = booster.predict(d, pred_contribs=True)  # last column = bias
    shap_mean = np.abs(contribs[:, :-1]).mean(axis=0)
    imp = pd.DataFrame(
        {"feature": features, "gain": [float(gain.get(f, 0.0)) for f in features], "mean_abs_shap": shap_mean}
    )
    total = imp["gain"].sum()
    imp["gain_share"] = imp["gain"] / total if total else 0.0
    return imp.sort_values("mean_abs_shap", ascending=False).reset_index(drop=True)


def run_checks(
    metrics: dict[str, float], booster: xgb.Booster, df: pd.DataFrame, features: list[str], scores: np.ndarray
) -> dict:
    """Sanity checks a model must pass to be promoted."""
    base = metrics["base_rate"]
    need_pr = max(2 * base, base + 0.05)
    all_missing = pd.DataFrame(np.nan, index=range(3), columns=features)
    empty_scores = predict(booster, all_missing, features)
    return {
        "pr_auc_well_above_base_rate": {
            "ok": bool(metrics["pr_auc"] >= need_pr),
            "detail": f"PR-AUC {metrics['pr_auc']:.4f} vs required {need_pr:.4f} (base rate {base:.4f})",
        },
        "roc_auc_above_0.6": {"ok": bool(metrics["roc_auc"] >= 0.6), "detail": f"ROC-AUC {metrics['roc_auc']:.4f}"},
        "scores_finite_in_0_1": {
            "ok": bool(np.isfinite(scores).all() and (scores >= 0).all() and (scores <= 1).all()),
            "detail": f"{int((~np.isfinite(scores)).sum())} non-finite scores",
        },
        "scores_all_features_missing": {
            "ok": bool(np.isfinite(empty_scores).all()),
            "detail": f"score with every feature missing: {float(empty_scores[0]):.4f}",
        },
        "holdout_has_frauds": {
            "ok": bool(metrics["positives"] >= 10),
            "detail": f"{metrics['positives']} frauds in the holdout (need >= 10 for a meaningful comparison)",
        },
    }


def evaluate(
    booster: xgb.Booster,
    test: pd.DataFrame,
    valid: pd.DataFrame,
    features: list[str],
    feature_refs: list[str],
    seed: int = 7,
) -> Evaluation:
    """Evaluate on ``test``; the decision threshold is set on ``valid`` at 1% false-positive rate."""
    valid_scores = predict(booster, valid, features)
    threshold = threshold_at_fpr(valid[label_column()].to_numpy(), valid_scores)
    scores = predict(booster, test, features)
    y = test[label_column()].to_numpy()
    metrics = core_metrics(y, scores, threshold)
    segments, gaps = segment_metrics(test, scores, threshold, metrics["recall_at_threshold"])
    prob_true, prob_pred = calibration_curve(y, scores, n_bins=10, strategy="quantile")
    return Evaluation(
        metrics=metrics,
        threshold=threshold,
        segments=segments,
        gaps=gaps,
        robustness=robustness(booster, test, features, feature_refs, seed),
        importance=importance(booster, test, features),
        calibration={"mean_predicted": prob_pred.tolist(), "fraction_positive": prob_true.tolist()},
        checks=run_checks(metrics, booster, test, features, scores),
    )


# ---------------------------------------------------------------- report


def _plots(ev: Evaluation, y: np.ndarray, scores: np.ndarray, out: Path) -> dict[str, str]:
    files = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    fpr, tpr, _ = roc_curve(y, scores)
    axes[0].plot(fpr, tpr, label=f"ROC-AUC {ev.metrics['roc_auc']:.3f}")
    axes[0].axvline(TARGET_FPR, color="grey", ls=":", label="1% FPR")
    axes[0].plot([0, 1], [0, 1], color="lightgrey", ls="--")
    axes[0].set(xlabel="false positive rate", ylabel="recall", title="ROC")
    axes[0].legend(loc="lower right")
    prec, rec, _ = precision_recall_curve(y, scores)
    axes[1].plot(rec, prec, label=f"PR-AUC {ev.metrics['pr_auc']:.3f}")
    axes[1].axhline(ev.metrics["base_rate"], color="lightgrey", ls="--", label="base rate")
    axes[1].set(xlabel="recall", ylabel="precision", title="Precision-recall")
    axes[1].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "roc_pr.png", dpi=90)
    plt.close(fig)
    files["roc_pr"] = "roc_pr.png"

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(ev.calibration["mean_predicted"], ev.calibration["fraction_positive"], marker="o")
    ax.plot([0, 1], [0, 1], color="lightgrey", ls="--")
    ax.set(xlabel="mean score (decile)", ylabel="observed fraud rate", title="Calibration")
    fig.tight_layout()
    fig.savefig(out / "calibration.png", dpi=90)
    plt.close(fig)
    files["calibration"] = "calibration.png"

    top = ev.importance.head(15).iloc[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    axes[0].barh(top["feature"], top["gain_share"])
    axes[0].set(title="gain share", xlabel="share of total gain")
    axes[1].barh(top["feature"], top["mean_abs_shap"])
    axes[1].set(title="mean |SHAP| on holdout", xlabel="log-odds")
    fig.tight_layout()
    fig.savefig(out / "importance.png", dpi=90)
    plt.close(fig)
    files["importance"] = "importance.png"

    from core.feature_refs import label_definition

    negative, positive = label_definition().decisions
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(scores[y == 0], bins=50, alpha=0.6, density=True, label=f"{negative} (label 0)")
    ax.hist(scores[y == 1], bins=50, alpha=0.6, density=True, label=f"{positive} (label 1)")
    ax.axvline(ev.threshold, color="k", ls=":", label="threshold")
    ax.set(xlabel="score", ylabel="density", title="Score distribution (holdout)", yscale="log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=90)
    plt.close(fig)
    files["scores"] = "scores.png"
    return files


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def write_report(
    ev: Evaluation,
    test: pd.DataFrame,
    booster: xgb.Booster,
    features: list[str],
    out: Path,
    context: dict[str, Any],
) -> Path:
    """``report.md`` + PNGs + ``evaluation.json`` in ``out``; returns the Markdown path."""
    out.mkdir(parents=True, exist_ok=True)
    y = test[label_column()].to_numpy()
    scores = predict(booster, test, features)
    ev.plots = _plots(ev, y, scores, out)
    m = ev.metrics
    lines = [
        f"# Model evaluation{' — ' + context['tag'] if context.get('tag') else ''}",
        "",
        f"Training set `{context.get('training_set_hash', '')[:16]}` ({context.get('rows', '?')} rows), "
        f"feature service `{context.get('feature_service', '')}`, code `{context.get('code_version', '')}`.",
        "",
        "Time-based split (no shuffling): " + "; ".join(f"**{k}** {v}" for k, v in context.get("split", {}).items()),
        "",
        "## Holdout (test split) metrics",
        "",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {_fmt(v)} |" for k, v in m.items()],
        f"| threshold (1% FPR on validation) | {ev.threshold:.6f} |",
        "",
        "![ROC and PR](roc_pr.png)",
        "",
        "## Calibration",
        "",
        "Scores are trained with `scale_pos_weight` (class re-weighting), so they over-state the fraud",
        "probability; use them to rank and threshold, not as probabilities.",
        "",
        "![calibration](calibration.png) ![scores](scores.png)",
        "",
        "## Metrics per segment",
        "",
        f"Segments with at least {MIN_SEGMENT_ROWS} holdout rows; recall/FPR at the decision threshold.",
    ]
    for col, rows in ev.segments.items():
        lines += [
            "",
            f"### by {col}",
            "",
            "| segment | rows | positives | PR-AUC | ROC-AUC | recall | FPR |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['segment']} | {r['rows']} | {r['positives']} | {_fmt(r['pr_auc'])} | {_fmt(r['roc_auc'])} | "
            f"{_fmt(r['recall_at_threshold'])} | {_fmt(r['fpr_at_threshold'])} |"
            for r in rows
        ]
    lines += ["", "**Gaps** (recall 0.2 below overall): " + ("; ".join(ev.gaps) if ev.gaps else "none found.")]
    lines += [
        "",
        "## Robustness",
        "",
        f"PR-AUC {m['pr_auc']:.4f} on clean holdout; with multiplicative Gaussian noise on continuous",
        "features, and with all features of one view missing (as when the online store lost them):",
        "",
        "| condition | PR-AUC |",
        "|---|---|",
        *[f"| {k.removeprefix('pr_auc_')} | {v:.4f} |" for k, v in ev.robustness.items()],
        "",
        "## Feature importance",
        "",
        "![importance](importance.png)",
        "",
        "| feature | gain share | mean abs SHAP |",
        "|---|---|---|",
        *[f"| {r.feature} | {r.gain_share:.4f} | {r.mean_abs_shap:.4f} |" for r in ev.importance.itertuples()],
        "",
        "## Checks",
        "",
        *[f"- [{'x' if c['ok'] else ' '}] **{name}**: {c['detail']}" for name, c in ev.checks.items()],
        "",
    ]
    if context.get("decision"):
        lines += ["## Promotion decision", "", context["decision"], ""]
    if context.get("trials"):
        lines += [
            "## Hyperparameter search (validation PR-AUC)",
            "",
            "| config | best iteration | PR-AUC |",
            "|---|---|---|",
        ]
        for t in context["trials"]:
            cfg = ", ".join(f"{k}={v}" for k, v in t.items() if k not in ("best_iteration", "valid_pr_auc"))
            lines.append(f"| {cfg} | {t['best_iteration']} | {t['valid_pr_auc']:.4f} |")
        lines.append("")
    path = out / "report.md"
    path.write_text("\n".join(lines))
    payload = {
        "metrics": {k: _num(v) for k, v in m.items()},
        "threshold": ev.threshold,
        "segments": ev.segments,
        "gaps": ev.gaps,
        "robustness": ev.robustness,
        "calibration": ev.calibration,
        "checks": ev.checks,
        "importance": ev.importance.to_dict(orient="records"),
        **{k: v for k, v in context.items() if k in ("tag", "decision", "split", "training_set_hash")},
    }
    (out / "evaluation.json").write_text(json.dumps(payload, indent=2, default=str))
    return path
