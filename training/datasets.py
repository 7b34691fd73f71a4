"""Point-in-time correct training sets from labels, transactions and the Feast feature store.

A data scientist's entry point::

    from training.datasets import training_frame
    df = training_frame("2026-03-01", "2026-03-10")          # features of fraud_model_v1 + label

How a row is built:

- **Labels** (``labels.parquet``: transaction, user, merchant, label time, fraud flag) are used only if
  ``label_timestamp <= cutoff`` (labels arrive late; a model trained at time T only knew those).
- They are joined with the **transactions** (``transactions/``) for ``amount`` and ``country``, the
  request fields of the on-demand view ``transaction_context``.
- **Entity timestamp = transaction event time - 1 µs**: features as they were just before the
  transaction was scored. The stream job stamps a feature row at the time of the transaction that
  produced it, and that row already counts the transaction itself; serving scores a transaction
  before the stream job has seen it. So "strictly before the transaction" is what serving sees, and
  using the transaction's own time would leak the transaction (and its label) into its features.
- Features come from Feast ``get_historical_features`` with the feature service ``fraud_model_v1``
  (``join="feast"``, offline store per ``RTML_OFFLINE_STORE``: duckdb by default, or spark), or from
  :mod:`training.pit_join` (``join="fast"``: same semantics and frame; a sort + binary search per view).
- Rows are never dropped for missing feature history (TTL expired, unknown user): the features are
  null and the row count is checked against the entity count (``RuntimeError`` if different).

:func:`build_training_set` additionally saves the frame (Parquet) with a manifest (feature refs, time
range, row count, label rate, content hash) under ``<state_dir>/training_sets/<hash>/`` (``<data dir>/training_sets``
when the data dir is on S3).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import UserFacingError
from core.settings import settings
from core.storage import Location, data_root, location

log = logging.getLogger(__name__)

FEATURE_SERVICE = "fraud_model_v1"
ENTITY_OFFSET = pd.Timedelta(microseconds=1)
LABEL = "is_fraud"
# Columns kept for evaluation (metrics per segment); not model inputs.
SEGMENT_REFS = ["merchant_profile:category", "user_profile:home_country"]
ID_COLUMNS = ["transaction_id", "user_id", "merchant_id", "event_timestamp", "txn_timestamp", "label_timestamp"]
REQUEST_COLUMNS = ["amount", "country"]

TimeLike = str | datetime | pd.Timestamp | None


def to_utc(value: TimeLike) -> pd.Timestamp | None:
    """A UTC timestamp from an ISO string / datetime (naive means UTC), or None."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _root(data_dir: Path | str | Location | None) -> Location:
    """The data dir to read: ``data_dir`` (a folder, ``s3://`` URL or Location) or the settings' one."""
    if data_dir is None:
        return data_root()
    return data_dir if isinstance(data_dir, Location) else location(data_dir)


def _read_parquet(path: Location, what: str, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.exists():
        raise UserFacingError(
            f"{what} not found at {path}; generate history first (`rtml simulate`) or set RTML_DATA_DIR"
        )
    return path.read_pandas(columns=columns)


def load_labels(cutoff: TimeLike = None, data_dir: Path | str | Location | None = None) -> pd.DataFrame:
    """Labels known at ``cutoff`` (``label_timestamp <= cutoff``; all labels when None)."""
    data_dir = _root(data_dir)
    labels = _read_parquet(data_dir / "labels.parquet", "labels")
    missing = {"transaction_id", "label_timestamp", LABEL} - set(labels.columns)
    if missing:
        raise UserFacingError(f"labels.parquet lacks columns {sorted(missing)}")
    cut = to_utc(cutoff)
    if cut is not None:
        labels = labels[labels["label_timestamp"] <= cut]
    return labels


def entity_frame(
    start: TimeLike = None, end: TimeLike = None, cutoff: TimeLike = None,
    data_dir: Path | str | Location | None = None,
) -> pd.DataFrame:
    """Labelled transactions with event time in ``[start, end)`` and label known at ``cutoff``.

    Columns: transaction_id, user_id, merchant_id, event_timestamp (= txn time - 1 µs, the entity
    time), txn_timestamp, label_timestamp, is_fraud, amount, country. Sorted by transaction time.
    """
    data_dir = _root(data_dir)
    start_ts, end_ts, cut = to_utc(start), to_utc(end), to_utc(cutoff)
    if start_ts is not None and end_ts is not None and start_ts >= end_ts:
        raise UserFacingError(f"empty time range: start {start_ts} is not before end {end_ts}")
    all_labels = load_labels(None, data_dir)
    labels = all_labels if cut is None else all_labels[all_labels["label_timestamp"] <= cut]
    if labels.empty:
        hint = f"; the earliest label arrives at {all_labels['label_timestamp'].min()}" if len(all_labels) else ""
        raise UserFacingError(f"no labels known at cutoff {cut}{hint}")
    txns = _read_parquet(
        data_dir / "transactions",
        "transactions",
        columns=["transaction_id", "user_id", "merchant_id", "amount", "country", "event_timestamp"],
    )
    if start_ts is not None:
        txns = txns[txns["event_timestamp"] >= start_ts]
    if end_ts is not None:
        txns = txns[txns["event_timestamp"] < end_ts]
    if txns.empty:
        raise UserFacingError(f"no transactions in the time range [{start_ts}, {end_ts})")
    txns = txns.rename(columns={"event_timestamp": "txn_timestamp"})
    df = txns.merge(labels[["transaction_id", "label_timestamp", LABEL]], on="transaction_id", how="inner")
    if df.empty:
        raise UserFacingError(
            f"no labelled transactions in [{start_ts}, {end_ts}) with labels known at cutoff {cut} "
            f"({len(txns)} transactions, {len(labels)} labels)"
        )
    df = df.drop_duplicates("transaction_id").sort_values(["txn_timestamp", "transaction_id"], kind="stable")
    df["txn_timestamp"] = df["txn_timestamp"].astype("datetime64[us, UTC]")
    df["label_timestamp"] = df["label_timestamp"].astype("datetime64[us, UTC]")
    df["event_timestamp"] = (df["txn_timestamp"] - ENTITY_OFFSET).astype("datetime64[us, UTC]")
    df[LABEL] = df[LABEL].astype("int64")
    return df[[*ID_COLUMNS, LABEL, *REQUEST_COLUMNS]].reset_index(drop=True)


# ---------------------------------------------------------------- features


def resolve_refs(store: Any, features: str | list[str]) -> list[str]:
    """``view:feature`` references of a feature service name or an explicit list (validated)."""
    from training.pit_join import feast_view_specs

    if isinstance(features, str):
        try:
            service = store.get_feature_service(features)
        except Exception as exc:  # noqa: BLE001
            raise UserFacingError(f"unknown feature service {features!r}; run `rtml apply` first? ({exc})") from None
        refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
    else:
        refs = list(features)
        if not refs:
            raise UserFacingError("no features requested")
    feast_view_specs(store, refs)  # raises on unknown views / features
    return refs


def historical_features(
    entities: pd.DataFrame, features: str | list[str] = FEATURE_SERVICE, join: str = "feast", store: Any = None
) -> pd.DataFrame:
    """Point-in-time features for ``entities`` (needs join keys, ``event_timestamp`` and the request
    fields), in entity order, entity columns first. ``join``: ``feast`` or ``fast``."""
    from core.feast_store import get_store

    store = store or get_store()
    refs = resolve_refs(store, features)
    names = [r.split(":", 1)[1] for r in refs]
    if entities.empty:
        raise UserFacingError("no entity rows")
    plain_index = isinstance(entities.index, pd.RangeIndex) and entities.index.start == 0 and entities.index.step == 1
    ent = entities if plain_index else entities.reset_index(drop=True)
    if join == "feast":
        keyed = ent.assign(__row=np.arange(len(ent)))
        feats = store.get_feature_service(features) if isinstance(features, str) else refs
        out = store.get_historical_features(entity_df=keyed, features=feats, full_feature_names=False).to_df()
        if len(out) != len(ent):
            raise RuntimeError(f"feature retrieval returned {len(out)} rows for {len(ent)} entity rows")
        out = out.sort_values("__row").reset_index(drop=True)
        if not np.array_equal(out["__row"].to_numpy(), np.arange(len(ent))):
            raise RuntimeError("feature retrieval duplicated or lost entity rows")
        features_df = out[names]
    elif join == "fast":
        features_df = fast_features(store, ent, refs)
    else:
        raise UserFacingError(f"unknown join method {join!r} (feast or fast)")
    features_df.index = ent.index  # in place: set_axis would copy (and consolidate) every feature column
    return pd.concat([ent, features_df], axis=1, copy=False)


def fast_features(store: Any, entities: pd.DataFrame, refs: list[str]) -> pd.DataFrame:
    """The features of ``refs`` via :func:`training.pit_join.pit_join` (+ on-demand views as Feast runs them)."""
    from training.pit_join import apply_on_demand, feast_view_specs, pit_join

    specs, odfvs, _hidden = feast_view_specs(store, refs)
    table = pit_join(pa.Table.from_pandas(entities, preserve_index=False), specs)
    table = apply_on_demand(table, odfvs)
    names = [r.split(":", 1)[1] for r in refs]
    return table.select(names).to_pandas(split_blocks=True, self_destruct=True)


def training_frame(
    start: TimeLike = None,
    end: TimeLike = None,
    cutoff: TimeLike = None,
    features: str | list[str] = FEATURE_SERVICE,
    join: str = "feast",
    segments: bool = True,
) -> pd.DataFrame:
    """Labelled transactions in ``[start, end)`` (labels known at ``cutoff``) with their point-in-time
    features: id/time columns, ``is_fraud``, ``amount``, ``country``, the features (in the service's
    order) and, with ``segments``, ``category`` and ``home_country`` for per-segment evaluation."""
    from core.feast_store import get_store

    store = get_store()
    entities = entity_frame(start, end, cutoff)
    df = historical_features(entities, features, join=join, store=store)
    if segments:
        names = set(df.columns)
        seg_refs = [r for r in SEGMENT_REFS if r.split(":")[1] not in names]
        if seg_refs:
            seg = fast_features(store, entities[["user_id", "merchant_id", "event_timestamp"]], seg_refs)
            df = pd.concat([df, seg], axis=1)
    if len(df) != len(entities):
        raise RuntimeError(f"training frame has {len(df)} rows for {len(entities)} labelled transactions")
    return df


# ---------------------------------------------------------------- saved training sets


def content_hash(df: pd.DataFrame) -> str:
    """SHA-256 over the frame's values and column names (row order matters)."""
    h = hashlib.sha256()
    h.update(json.dumps([str(c) for c in df.columns]).encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


@dataclass
class TrainingSet:
    frame: pd.DataFrame
    manifest: dict[str, Any]
    path: Path | str  # a local folder, or an s3:// URL when the data dir is on S3

    @property
    def features(self) -> list[str]:
        return list(self.manifest["features"])


def build_training_set(
    start: TimeLike = None,
    end: TimeLike = None,
    cutoff: TimeLike = None,
    features: str | list[str] = FEATURE_SERVICE,
    join: str = "feast",
    out_dir: Path | str | None = None,
) -> TrainingSet:
    """:func:`training_frame` saved as ``data.parquet`` + ``manifest.json`` (folder named by content hash).

    Default folder: ``<state_dir>/training_sets``, or ``<data dir>/training_sets`` when the data dir is on S3.
    ``manifest.json`` is written last and is the commit marker: a folder without it is incomplete."""
    from core.feast_store import get_store
    from training.validation import feature_stats

    refs = resolve_refs(get_store(), features)
    df = training_frame(start, end, cutoff, features=features, join=join)
    names = [r.split(":", 1)[1] for r in refs]
    digest = content_hash(df)
    s = settings()
    manifest = {
        "feature_service": features if isinstance(features, str) else None,
        "feature_refs": refs,
        "features": names,
        "label": LABEL,
        "requested_range": [str(to_utc(start)) if start else None, str(to_utc(end)) if end else None],
        "label_cutoff": str(to_utc(cutoff)) if cutoff else None,
        "txn_time_range": [df["txn_timestamp"].min().isoformat(), df["txn_timestamp"].max().isoformat()],
        "entity_timestamp": "transaction event time - 1 microsecond",
        "rows": int(len(df)),
        "positives": int(df[LABEL].sum()),
        "label_rate": float(df[LABEL].mean()),
        "rows_without_history": {n: int(df[n].isna().sum()) for n in names if df[n].isna().any()},
        "content_hash": digest,
        "feature_stats": feature_stats(df, names),
        "join": join,
        "offline_store": s.offline_store if join == "feast" else "training.pit_join",
        "data_dir": s.data_url,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    default = data_root() / "training_sets" if s.data_on_s3 else location(s.state_dir / "training_sets")
    folder = (location(out_dir) if out_dir is not None else default) / digest[:16]
    (folder / "data.parquet").write_pandas(df, coerce_timestamps="us", allow_truncated_timestamps=True)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("training set %s: %d rows, label rate %.4f", folder, len(df), manifest["label_rate"])
    return TrainingSet(frame=df, manifest=manifest, path=_shown(folder))


def _shown(folder: Location) -> Path | str:
    return folder.uri if folder.s3 else folder.local_path()


def load_training_set(path: Path | str) -> TrainingSet:
    """A saved training set (``data.parquet`` + ``manifest.json``; a local folder or an ``s3://`` URL)."""
    folder = location(path)
    manifest = json.loads((folder / "manifest.json").read_text())
    return TrainingSet(frame=(folder / "data.parquet").read_pandas(), manifest=manifest, path=_shown(folder))
