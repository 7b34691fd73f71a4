"""Online/offline consistency: are the features the model is served the features it was trained on?

The job samples the ``predictions`` topic (each record holds the exact feature vector served, the
entity keys and the request time), waits until the offline store is final for those times (the
stream job writes offline rows once the watermark passed: ``settle_s``), recomputes the same features
with the point-in-time join over the offline store (:func:`training.pit_join.pit_join`, the join
training sets are built with) and compares them value by value. A served value is consistent when
it equals the offline one (relative tolerance ``rtol``; both missing counts as equal).

Entity time: the served vector was read before the request's own transaction reached the stores, so
the offline side is joined as of the transaction's event time minus 1 microsecond (training's
entity time), or the request time when the transaction's event time is unknown.

Results: ``rtml_consistency_rate{view,feature}`` / ``rtml_consistency_rows{...}`` /
``rtml_consistency_view_rate{view}`` in Prometheus, the report in ``<state_dir>/monitor/consistency.json``
(core/consistency.py), which the promotion gate reads. On-demand features are computed from the
request at serving time and are not in the offline store: reported as not checked.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from prometheus_client import CollectorRegistry, Gauge

from core.prediction_messages import expand

log = logging.getLogger(__name__)

ENTITY_TS = "event_timestamp"
EXAMPLES = 5


@dataclass
class FeatureConsistency:
    view: str
    feature: str
    rows: int = 0
    consistent: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.consistent / self.rows if self.rows else math.nan


@dataclass
class ConsistencyReport:
    features: dict[str, FeatureConsistency]  # "view:feature" -> result
    rows: int
    not_checked: list[str]  # refs the offline store cannot recompute (on-demand)
    seconds: float = 0.0
    checked_at: str = ""

    def view_rates(self) -> dict[str, float]:
        views: dict[str, list[int]] = {}
        for c in self.features.values():
            agg = views.setdefault(c.view, [0, 0])
            agg[0] += c.consistent
            agg[1] += c.rows
        return {v: (ok / n if n else math.nan) for v, (ok, n) in views.items()}

    def worst(self) -> tuple[str, float]:
        ref = min(self.features, key=lambda r: (np.nan_to_num(self.features[r].rate, nan=1.0), r))
        return ref, self.features[ref].rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "checked_at": self.checked_at,
            "rows": self.rows,
            "seconds": self.seconds,
            "not_checked": self.not_checked,
            "views": self.view_rates(),
            "features": {
                ref: {"view": c.view, "feature": c.feature, "rows": c.rows, "consistent": c.consistent,
                      "rate": c.rate, "examples": c.examples}
                for ref, c in self.features.items()
            },
        }


def served_frame(records: Iterable[dict[str, Any] | bytes | str], join_keys: list[str], features: list[str]) -> pd.DataFrame:
    """Prediction records -> one row per request: join keys, the entity time of the point-in-time join and the
    served value of every feature (NaN when served missing). The entity time is the request's event time - 1 us
    (what serving and training see: the state just before the event), or the prediction time for a record
    without one."""
    rows = []
    for rec in records:
        msg = json.loads(rec) if isinstance(rec, bytes | str) else rec
        served = msg.get("features") or {}
        missing = set(msg.get("missing_features") or [])
        row = {k: msg[k] for k in join_keys}
        event = msg.get("event_timestamp")
        row["request_time"] = (
            pd.Timestamp(event).tz_convert("UTC") - pd.Timedelta(microseconds=1) if event
            else pd.Timestamp(msg["prediction_timestamp"]).tz_convert("UTC")
        )
        for f in features:
            v = served.get(f)
            row[f] = math.nan if v is None or f in missing else float(v)
        rows.append(row)
    return pd.DataFrame(rows)


def entity_rows(served: pd.DataFrame, join_keys: list[str]) -> pd.DataFrame:
    """Entity rows for the point-in-time join (join keys, entity time)."""
    out = served[join_keys].copy()
    out[ENTITY_TS] = pd.to_datetime(served["request_time"], utc=True).astype("datetime64[us, UTC]")
    return out


def offline_values(entities: pd.DataFrame, specs: list) -> pd.DataFrame:
    """The same features recomputed from the offline store (``training.pit_join`` over ``specs``)."""
    from training.pit_join import pit_join

    table = pa.Table.from_pandas(entities.reset_index(drop=True), preserve_index=False)
    return pit_join(table, specs, ENTITY_TS).to_pandas()


def compare(
    served: pd.DataFrame, offline: pd.DataFrame, specs: list, rtol: float = 1e-6, atol: float = 1e-9
) -> dict[str, FeatureConsistency]:
    """Per ``view:feature``: rows where the served value equals the offline one."""
    out = {}
    for spec in specs:
        for feature in spec.features:
            if feature not in served.columns:
                continue
            online = served[feature].to_numpy(dtype=float)
            batch = pd.to_numeric(offline[feature], errors="coerce").to_numpy(dtype=float)
            both_missing = np.isnan(online) & np.isnan(batch)
            with np.errstate(invalid="ignore"):
                close = np.isclose(online, batch, rtol=rtol, atol=atol)
            ok = both_missing | close
            c = FeatureConsistency(spec.name, feature, int(len(ok)), int(ok.sum()))
            for i in np.flatnonzero(~ok)[:EXAMPLES]:
                c.examples.append(
                    {
                        "entity": {k: _plain(served.iloc[i][k]) for k in spec.join_keys},
                        "request_time": str(served.iloc[i]["request_time"]),
                        "online": None if np.isnan(online[i]) else float(online[i]),
                        "offline": None if np.isnan(batch[i]) else float(batch[i]),
                    }
                )
            out[f"{spec.name}:{feature}"] = c
    return out


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def check(
    records: Iterable[dict[str, Any] | bytes | str],
    specs: list,
    not_checked: list[str] | None = None,
    rtol: float = 1e-6,
) -> ConsistencyReport:
    """Compare the served vectors of ``records`` with the offline store (``specs``: ``training.pit_join.ViewSpec``)."""
    t0 = time.perf_counter()
    join_keys = sorted({k for s in specs for k in s.join_keys})
    features = [f for s in specs for f in s.features]
    served = served_frame(records, join_keys, features)
    if served.empty:
        return ConsistencyReport({}, 0, list(not_checked or []), 0.0, _now())
    offline = offline_values(entity_rows(served, join_keys), specs)
    result = compare(served, offline, specs, rtol)
    return ConsistencyReport(result, len(served), list(not_checked or []), time.perf_counter() - t0, _now())


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class ConsistencyMetrics:
    """``rtml_consistency_*`` gauges (their own registry unless one is given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.rate = Gauge("rtml_consistency_rate", "Share of sampled served values equal to the offline recomputation", ["view", "feature"], registry=r)
        self.rows = Gauge("rtml_consistency_rows", "Sampled served values compared", ["view", "feature"], registry=r)
        self.view_rate = Gauge("rtml_consistency_view_rate", "Consistency over all features of a view", ["view"], registry=r)
        self.last_run = Gauge("rtml_consistency_last_run_timestamp_seconds", "When the consistency check last ran", registry=r)

    def export(self, report: ConsistencyReport) -> None:
        for c in report.features.values():
            self.rate.labels(view=c.view, feature=c.feature).set(c.rate)
            self.rows.labels(view=c.view, feature=c.feature).set(c.rows)
        for view, rate in report.view_rates().items():
            self.view_rate.labels(view=view).set(rate)
        self.last_run.set(time.time())


def model_specs(feature_refs: list[str]) -> tuple[list, list[str]]:
    """The offline-store specs of a model's features (Feast registry), and the refs it cannot recompute."""
    from core.feast_store import get_store
    from training.pit_join import feast_view_specs

    specs, odfvs, extra = feast_view_specs(get_store(), feature_refs)
    not_checked = [f"{odfv.name}:{f}" for odfv, feats in odfvs for f in feats]
    wanted = {r.split(":", 1)[1] for r in feature_refs}
    specs = [s for s in specs if any(f in wanted for f in s.features)]
    from dataclasses import replace

    specs = [replace(s, features=tuple(f for f in s.features if f in wanted)) for s in specs]
    return specs, not_checked


def sample_predictions(consumer, topic: str, settle_s: float, max_rows: int, every: int = 1, timeout_s: float = 30.0) -> list[dict]:
    """Up to ``max_rows`` prediction records (every ``every``-th) older than ``settle_s`` seconds."""
    cutoff_ms = (time.time() - settle_s) * 1000
    out: list[dict] = []
    seen = 0
    deadline = time.monotonic() + timeout_s
    while len(out) < max_rows and time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=1000, max_records=5000)
        if not batch:
            break
        for records in batch.values():
            for rec in expand(records, on_malformed=lambda _msg, _exc: None):  # one per prediction; unreadable: skipped
                if rec.timestamp > cutoff_ms:
                    continue  # not final yet offline
                seen += 1
                if seen % every == 0 and len(out) < max_rows:
                    try:
                        out.append(json.loads(rec.value))
                    except ValueError:
                        continue
    return out
