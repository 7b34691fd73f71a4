"""Variant comparison of a model rollout (shadow, canary, A/B) and the policy that finishes or aborts it.

The prediction service logs every variant's prediction to the ``predictions`` topic with ``variant``
(``production`` or ``challenger``), ``model_version``, ``served`` (whether the caller got that score) and
``latency_ms`` (model scoring time). :class:`RolloutTracker` reads those records and the late labels:

- per variant: predictions, errors (records with decision ``error``), score distribution, decision rate,
  scoring latency, and performance once labels arrive (PR-AUC, precision, recall at the variant's
  threshold, through :class:`monitoring.performance.PerformanceTracker`);
- in shadow mode, both variants scored the same request on the same feature vector: the pairs (joined
  by ``request_id``) give the score divergence and the decision agreement.

:class:`RolloutPolicy` turns that status into a recommendation (hold, go to canary, complete, abort) and
:class:`RolloutController` writes it as ``status.json`` + ``report.html`` under ``<state_dir>/rollout/``
and, when the rollout was started with ``--auto``, applies it through the model store: shadow for N
paired predictions, then a canary share, then complete; abort on error rate, latency or performance
regression. The monitor feeds it from its own Kafka loop (:meth:`RolloutFeed.observe`), dropping the
records that were not served so drift and performance keep describing what callers received.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from monitoring.performance import PerformanceTracker

log = logging.getLogger(__name__)

PRODUCTION, CHALLENGER = "production", "challenger"
VARIANTS = (PRODUCTION, CHALLENGER)


@cache
def _decoders(event_key: str, label: str) -> tuple[msgspec.json.Decoder, msgspec.json.Decoder]:
    """Decoders of the prediction fields the comparison reads and of label records; the event id and label
    fields are named by the feature repo's label view (read as ``event_id`` and ``label``)."""
    record = msgspec.defstruct(
        "_Record",
        [("request_id", str), ("event_id", str), ("score", float | None), ("decision", str),
         ("variant", str, PRODUCTION), ("model_version", str, ""), ("served", bool, True),
         ("latency_ms", float | None, None)],
        rename={"event_id": event_key},
    )
    labels = msgspec.defstruct("_Label", [("event_id", str), ("label", int)], rename={"event_id": event_key, "label": label})
    return msgspec.json.Decoder(record), msgspec.json.Decoder(labels)


@cache
def _positive_decision() -> str:
    from core.feature_refs import label_definition

    return label_definition().decisions[1]


def _repo_decoders() -> tuple[msgspec.json.Decoder, msgspec.json.Decoder]:
    from core.feature_refs import label_definition

    labels = label_definition()
    return _decoders(labels.event_key, labels.label)


@dataclass
class VariantStats:
    """What one variant did during the rollout."""

    threshold: float = 0.5
    window: int = 20_000
    predictions: int = 0
    errors: int = 0
    flagged: int = 0
    model_version: str = ""
    scores: deque = field(default_factory=deque)
    latencies_ms: deque = field(default_factory=deque)
    performance: PerformanceTracker | None = None

    def __post_init__(self) -> None:
        self.scores = deque(maxlen=self.window)
        self.latencies_ms = deque(maxlen=self.window)
        self.performance = PerformanceTracker(window=self.window, threshold=self.threshold)

    def add(self, rec: Any) -> None:
        self.model_version = rec.model_version or self.model_version
        if rec.decision == "error" or rec.score is None or rec.score != rec.score:
            self.errors += 1
            return
        self.predictions += 1
        self.flagged += rec.decision == _positive_decision()
        self.scores.append(rec.score)
        if rec.latency_ms is not None:
            self.latencies_ms.append(rec.latency_ms)
        self.performance.add_prediction(rec.event_id, rec.score)

    def summary(self) -> dict[str, Any]:
        total = self.predictions + self.errors
        scores = np.asarray(self.scores, dtype=float)
        lat = np.asarray(self.latencies_ms, dtype=float)
        perf = self.performance.metrics()
        return {
            "model_version": self.model_version,
            "predictions": self.predictions,
            "errors": self.errors,
            "error_rate": self.errors / total if total else 0.0,
            "decision_rate": self.flagged / self.predictions if self.predictions else None,
            "score_mean": float(scores.mean()) if scores.size else None,
            "score_p50": float(np.percentile(scores, 50)) if scores.size else None,
            "score_p95": float(np.percentile(scores, 95)) if scores.size else None,
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
            "latency_samples": int(lat.size),
            "labelled": self.performance.labelled,
            "pr_auc": perf.pr_auc if perf else None,
            "precision": perf.precision if perf else None,
            "recall": perf.recall if perf else None,
        }


class RolloutTracker:
    """Per-variant statistics and shadow pairs of one rollout (identified by its ``id``)."""

    def __init__(self, rollout: dict[str, Any], thresholds: dict[str, float] | None = None, max_pending: int = 100_000):
        self.rollout = dict(rollout)
        thresholds = thresholds or {}
        self.variants = {v: VariantStats(threshold=thresholds.get(v, 0.5)) for v in VARIANTS}
        self.max_pending = max_pending
        self._pending: OrderedDict[str, tuple[str, float, str]] = OrderedDict()
        self.pairs = 0
        self.agree = 0
        self.diffs: deque[float] = deque(maxlen=20_000)

    @property
    def key(self) -> tuple[str, str]:
        return self.rollout.get("id", ""), self.rollout.get("mode", "")

    def add_record(self, raw: bytes | str) -> None:
        """One ``predictions`` message (malformed ones raise ``msgspec.DecodeError``)."""
        self.add(_repo_decoders()[0].decode(raw))

    def add(self, rec: Any) -> None:
        stats = self.variants.get(rec.variant)
        if stats is None:
            return
        stats.add(rec)
        if self.rollout.get("mode") != "shadow" or rec.score is None or rec.decision == "error":
            return
        other = self._pending.pop(rec.request_id, None)
        if other is None:
            self._pending[rec.request_id] = (rec.variant, rec.score, rec.decision)
            if len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
            return
        if other[0] == rec.variant:  # a duplicate delivery of the same record
            self._pending[rec.request_id] = other
            return
        self.pairs += 1
        self.agree += other[2] == rec.decision
        self.diffs.append(abs(other[1] - rec.score))

    def add_label(self, event_id: str, label: int) -> None:
        for stats in self.variants.values():
            stats.performance.add_label(event_id, label)

    def status(self) -> dict[str, Any]:
        diffs = np.asarray(self.diffs, dtype=float)
        return {
            "rollout": self.rollout,
            "variants": {v: s.summary() for v, s in self.variants.items()},
            "shadow": {
                "pairs": self.pairs,
                "decision_agreement": self.agree / self.pairs if self.pairs else None,
                "score_mean_abs_diff": float(diffs.mean()) if diffs.size else None,
                "score_p95_abs_diff": float(np.percentile(diffs, 95)) if diffs.size else None,
                "score_max_abs_diff": float(diffs.max()) if diffs.size else None,
            },
        }


@dataclass(frozen=True)
class Decision:
    action: str  # hold | canary | complete | abort
    reason: str


@dataclass
class RolloutPolicy:
    """When to move a rollout on, and when to abort it.

    Shadow: after ``shadow_predictions`` paired predictions with decision agreement >= ``min_agreement``
    go to a canary of ``canary_share``. Canary (and A/B): after ``canary_predictions`` predictions served by
    the challenger, complete. Any time: abort when the challenger's error rate exceeds ``max_error_rate``,
    its scoring p99 exceeds ``max_latency_ratio`` x production's (and production's + ``latency_slack_ms``),
    or, once both variants have ``min_labels`` labels of both classes, its PR-AUC is more than
    ``max_pr_auc_drop`` below production's.
    """

    shadow_predictions: int = 1000
    min_agreement: float = 0.9
    canary_share: float = 0.05
    canary_predictions: int = 500
    max_error_rate: float = 0.01
    min_error_sample: int = 100
    max_latency_ratio: float = 2.0
    latency_slack_ms: float = 0.25
    min_latency_samples: int = 100
    max_pr_auc_drop: float = 0.02
    min_labels: int = 200

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> RolloutPolicy:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in (raw or {}).items() if k in known})

    def decide(self, status: dict[str, Any]) -> Decision:
        mode = status["rollout"].get("mode")
        prod, chal = status["variants"][PRODUCTION], status["variants"][CHALLENGER]
        total = chal["predictions"] + chal["errors"]
        if total >= self.min_error_sample and chal["error_rate"] > self.max_error_rate:
            return Decision("abort", f"challenger error rate {chal['error_rate']:.2%} > {self.max_error_rate:.2%}")
        if min(chal["latency_samples"], prod["latency_samples"]) >= self.min_latency_samples and mode != "shadow":
            limit = max(prod["latency_p99_ms"] * self.max_latency_ratio, prod["latency_p99_ms"] + self.latency_slack_ms)
            if chal["latency_p99_ms"] > limit:
                return Decision(
                    "abort", f"challenger scoring p99 {chal['latency_p99_ms']:.3f} ms > {limit:.3f} ms (production {prod['latency_p99_ms']:.3f} ms)"
                )
        if (
            chal["pr_auc"] is not None
            and prod["pr_auc"] is not None
            and min(chal["labelled"], prod["labelled"]) >= self.min_labels
            and chal["pr_auc"] < prod["pr_auc"] - self.max_pr_auc_drop
        ):
            return Decision("abort", f"challenger PR-AUC {chal['pr_auc']:.4f} < production {prod['pr_auc']:.4f} - {self.max_pr_auc_drop}")
        if mode == "shadow":
            shadow = status["shadow"]
            if shadow["pairs"] < self.shadow_predictions:
                return Decision("hold", f"shadow: {shadow['pairs']} of {self.shadow_predictions} paired predictions")
            if shadow["decision_agreement"] < self.min_agreement:
                return Decision(
                    "hold", f"shadow: decision agreement {shadow['decision_agreement']:.2%} < {self.min_agreement:.0%}: review before a canary"
                )
            return Decision("canary", f"shadow: {shadow['pairs']} pairs, agreement {shadow['decision_agreement']:.2%}, no regression")
        if chal["predictions"] < self.canary_predictions:
            return Decision("hold", f"{mode}: {chal['predictions']} of {self.canary_predictions} challenger predictions")
        return Decision("complete", f"{mode}: {chal['predictions']} challenger predictions, no regression")


def render_html(status: dict[str, Any], decision: Decision) -> str:
    """A self-contained HTML rollout report."""
    esc = html.escape
    r = status["rollout"]
    rows = []
    keys = [k for k in status["variants"][PRODUCTION]]
    for k in keys:
        cells = "".join(f"<td>{esc(_fmt(status['variants'][v][k]))}</td>" for v in VARIANTS)
        rows.append(f"<tr><th>{esc(k)}</th>{cells}</tr>")
    shadow = "".join(f"<tr><th>{esc(k)}</th><td>{esc(_fmt(v))}</td></tr>" for k, v in status["shadow"].items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>rtml rollout {esc(str(r.get('challenger')))}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}
.rec{{font-size:1.3em;padding:.5em;background:#eef}}</style></head><body>
<h1>Rollout of {esc(str(r.get('challenger')))}</h1>
<p>mode <b>{esc(str(r.get('mode')))}</b>, share {esc(_fmt(r.get('share')))}, production {esc(str(r.get('production')))}, started {esc(str(r.get('started_at')))}</p>
<p class="rec">Recommendation: <b>{esc(decision.action)}</b> &mdash; {esc(decision.reason)}</p>
<h2>Variants</h2><table><tr><th></th><th>production</th><th>challenger</th></tr>{''.join(rows)}</table>
<h2>Shadow comparison (same requests, same feature vectors)</h2><table>{shadow}</table>
<p>updated {esc(time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()))}</p></body></html>
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def status_dir() -> Path:
    from core.settings import settings

    return settings().state_dir / "rollout"


def read_status(mode: str | None = None) -> dict[str, Any] | None:
    """The last status the controller wrote (``<state_dir>/rollout/status.json``; with ``mode``, the last
    one of that stage of the rollout), or None."""
    path = status_dir() / (f"status-{mode}.json" if mode else "status.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def policy_actor(rollout: dict[str, Any]) -> str:
    """The audit trail's actor for a change the rollout policy makes on its own: the policy of this rollout, run by
    the monitor as its OS user."""
    from core import audit

    return f"rollout policy (rollout {rollout.get('id')}) as {audit.default_actor()}"


class RolloutController:
    """Writes the rollout status + report and, for ``auto`` rollouts, applies the policy's decision."""

    def __init__(self, out_dir: Path | None = None):
        self.out_dir = out_dir or status_dir()

    def step(self, tracker: RolloutTracker) -> Decision:
        from core import model_store

        status = tracker.status()
        policy = RolloutPolicy.from_dict(tracker.rollout.get("policy"))
        decision = policy.decide(status)
        status["recommendation"] = asdict(decision)
        status["policy"] = asdict(policy)
        status["auto"] = bool(tracker.rollout.get("auto"))
        status["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status["report"] = str(self.out_dir / "report.html")
        self.write(status, decision)
        if not tracker.rollout.get("auto") or decision.action == "hold":
            return decision
        current = model_store.rollout_state()
        if not current or current.get("id") != tracker.rollout.get("id"):
            return decision  # someone else changed the rollout meanwhile
        audited = {"reason": f"policy: {decision.action}: {decision.reason}", "actor": policy_actor(tracker.rollout)}
        if decision.action == "canary":
            model_store.set_rollout_mode("canary", policy.canary_share, **audited)
        elif decision.action == "complete":
            model_store.complete_rollout(**audited)
        elif decision.action == "abort":
            model_store.abort_rollout(**audited)
        log.info("rollout of %s: %s (%s)", tracker.rollout.get("challenger"), decision.action, decision.reason)
        return decision

    def write(self, status: dict[str, Any], decision: Decision) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        raw = json.dumps(status, indent=2, default=str)
        stage = f"status-{status['rollout'].get('mode')}.json"  # the last word on each stage stays readable
        for name, text in (("status.json", raw), (stage, raw), ("report.html", render_html(status, decision))):
            tmp = self.out_dir / f".{name}.tmp"
            tmp.write_text(text)
            tmp.replace(self.out_dir / name)


class RolloutFeed:
    """The rollout's view of the monitor's Kafka batches.

    :meth:`observe` returns the records the monitor should use for drift and performance (those whose
    score was served) and, while a rollout runs, feeds every record and label to the tracker; every
    ``step_every_s`` it re-reads the rollout from the registry and runs the controller.
    """

    def __init__(self, predictions_topic: str, step_every_s: float = 5.0, controller: RolloutController | None = None):
        self.predictions_topic = predictions_topic
        self.step_every_s = step_every_s
        self.controller = controller or RolloutController()
        self.tracker: RolloutTracker | None = None
        self.malformed = 0
        self._next_step = 0.0
        self.refresh()

    def refresh(self) -> None:
        """Follow the registry: a new rollout (or a new mode of it) starts fresh statistics."""
        from core import model_store

        state = model_store.rollout_state()
        if not state:
            self.tracker = None
            return
        key = (state.get("id", ""), state.get("mode", ""))
        if self.tracker is None or self.tracker.key != key:
            self.tracker = RolloutTracker(state, _thresholds(state))
        else:
            self.tracker.rollout = dict(state)

    def observe(self, topic: str, records: list) -> list:
        tracker = self.tracker
        if topic == self.predictions_topic:
            if tracker is not None:
                for rec in records:
                    try:
                        tracker.add_record(rec.value)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        self.malformed += 1  # the monitor counts it with its own decoder
            if any(_unserved(rec.value) for rec in records):
                records = [rec for rec in records if not _unserved(rec.value)]
        elif tracker is not None:
            for rec in records:
                try:
                    label = _repo_decoders()[1].decode(rec.value)
                except (msgspec.DecodeError, msgspec.ValidationError):
                    continue
                tracker.add_label(label.event_id, label.label)
        now = time.monotonic()
        if now >= self._next_step:
            self._next_step = now + self.step_every_s
            self.step()
        return records

    def step(self) -> Decision | None:
        if self.tracker is not None:
            try:
                decision = self.controller.step(self.tracker)
            except Exception as exc:  # noqa: BLE001 - the rollout must never stop the monitor
                log.warning("rollout step failed: %s", exc)
                decision = None
        else:
            decision = None
        self.refresh()
        return decision


def _unserved(value: bytes | str) -> bool:
    """A record whose score the caller did not get (shadow, failed challenger)."""
    return (b'"served":false' in value) if isinstance(value, bytes | bytearray) else ('"served":false' in str(value))


def _thresholds(state: dict[str, Any]) -> dict[str, float]:
    """Decision thresholds of the two variants, recorded in the rollout by the model store."""
    return {k: float(v) for k, v in (state.get("thresholds") or {}).items()}
