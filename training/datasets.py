"""Point-in-time correct training sets from labels, events and the Feast feature store.

A data scientist's entry point::

    from training.datasets import training_frame
    df = training_frame("2026-03-01", "2026-03-10")          # features of the model's feature service + label

Everything domain-specific comes from the feature repo (:func:`frame_columns`): the feature service
(``RTML_FEATURE_SERVICE`` or the repo's only one), its ``LabelView`` (event id, label column, label source)
and the stream's ``KafkaSource`` (its batch source holds the raw events). For the reference fraud repo an
event is a transaction, the label ``is_fraud``.

How a row is built:

- **Labels** (the label view's source: event id, label time, label) are used only if
  ``label_timestamp <= cutoff`` (labels arrive late; a model trained at time T only knew those).
- They are joined with the **events** (the stream source's history) for the service's entity keys and
  the request fields of its on-demand views (e.g. ``amount`` and ``country``).
- **Entity timestamp = event time - 1 µs** (the event's own time is kept as ``event_time``): features as
  they were just before the event was scored. The stream job stamps a feature row at the time of the transaction that
  produced it, and that row already counts the transaction itself; serving scores a transaction
  before the stream job has seen it. So "strictly before the transaction" is what serving sees, and
  using the transaction's own time would leak the transaction (and its label) into its features.
- Features come from Feast ``get_historical_features`` with the feature service ``fraud_model_v1``
  (``join="feast"``, offline store per ``RTML_OFFLINE_STORE``: duckdb by default, or spark), or from
  :mod:`training.pit_join` (``join="fast"``: same semantics and frame; a merge pass per view).
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

ENTITY_OFFSET = pd.Timedelta(microseconds=1)
EVENT_TIME = "event_time"  # the labelled event's own time (the entity time is 1 µs earlier)
ENTITY_TIME = "event_timestamp"
LABEL_TIME = "label_timestamp"
SEGMENTS_TAG = "segments"  # feature service tag: "view:feature" or request field names, for per-segment evaluation

TimeLike = str | datetime | pd.Timestamp | None


@dataclass(frozen=True)
class FrameColumns:
    """The columns of a training frame, named by the feature repo."""

    service: str  # the feature service
    event_id: str  # the labelled event's id (the LabelView's entity key)
    label: str  # the label column (0/1)
    join_keys: tuple[str, ...]  # the service's entity keys
    request: tuple[str, ...]  # request fields of its on-demand views
    segments: tuple[str, ...]  # columns for per-segment evaluation (service tag "segments": refs or request fields)
    segment_refs: tuple[str, ...]  # the "view:feature" ones among them (joined in, not model inputs)
    labels_path: Location  # the label view's source, under the data dir (local or s3://)
    events_path: Location  # the stream source's raw event history

    @property
    def ids(self) -> list[str]:
        return [self.event_id, *self.join_keys, ENTITY_TIME, EVENT_TIME, LABEL_TIME]


def _data_path(path: str) -> Location:
    """A source's data under the current data dir (an absolute path or URL stays as it is)."""
    return location(path) if path.startswith("/") or "://" in path else data_root() / path


def frame_columns() -> FrameColumns:
    """Columns of the model's training frame, from its feature service, label view and event stream."""
    from core.contracts import stream_rules
    from core.feature_refs import label_definition, service_definition

    service, labels, events = service_definition(), label_definition(), stream_rules()
    if not events.history_path:
        raise UserFacingError(f"the stream source {events.name} declares no batch source (its raw event history)")
    tags = dict(service.tags)
    segments = tuple(r.strip() for r in tags.get(SEGMENTS_TAG, "").split(",") if r.strip())
    return FrameColumns(
        service=service.name, event_id=labels.event_key, label=labels.label, join_keys=service.join_keys,
        request=tuple(name for name, _ in service.request_fields),
        segments=tuple(s.rpartition(":")[2] for s in segments), segment_refs=tuple(s for s in segments if ":" in s),
        labels_path=_data_path(labels.path), events_path=_data_path(events.history_path),
    )


def to_utc(value: TimeLike) -> pd.Timestamp | None:
    """A UTC timestamp from an ISO string / datetime (naive means UTC), or None."""
    if value is None:
        return None
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _read_parquet(path: Location, what: str, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.exists():
        raise UserFacingError(
            f"{what} not found at {path}; generate history first (`rtml simulate`) or set RTML_DATA_DIR"
        )
    return path.read_pandas(columns=columns)


def load_labels(cutoff: TimeLike = None) -> pd.DataFrame:
    """Labels known at ``cutoff`` (``label_timestamp <= cutoff``; all labels when None): event id, label time
    (renamed ``label_timestamp``) and label, from the label view's source."""
    from core.feature_refs import label_definition

    cols, source = frame_columns(), label_definition()
    labels = _read_parquet(cols.labels_path, "labels").rename(columns={source.label_timestamp_field: LABEL_TIME})
    missing = {cols.event_id, LABEL_TIME, cols.label} - set(labels.columns)
    if missing:
        raise UserFacingError(f"{cols.labels_path.name} lacks columns {sorted(missing)}")
    cut = to_utc(cutoff)
    if cut is not None:
        labels = labels[labels[LABEL_TIME] <= cut]
    return labels


def entity_frame(start: TimeLike = None, end: TimeLike = None, cutoff: TimeLike = None) -> pd.DataFrame:
    """Labelled events with event time in ``[start, end)`` and label known at ``cutoff``.

    Columns (:class:`FrameColumns`): event id, the service's entity keys, event_timestamp (= event time
    - 1 µs, the entity time), event_time, label_timestamp, the label, the request fields. Sorted by event time.
    """
    from core.contracts import stream_rules

    cols = frame_columns()
    ts_field = stream_rules().timestamp_field
    start_ts, end_ts, cut = to_utc(start), to_utc(end), to_utc(cutoff)
    if start_ts is not None and end_ts is not None and start_ts >= end_ts:
        raise UserFacingError(f"empty time range: start {start_ts} is not before end {end_ts}")
    all_labels = load_labels(None)
    labels = all_labels if cut is None else all_labels[all_labels[LABEL_TIME] <= cut]
    if labels.empty:
        hint = f"; the earliest label arrives at {all_labels[LABEL_TIME].min()}" if len(all_labels) else ""
        raise UserFacingError(f"no labels known at cutoff {cut}{hint}")
    wanted = list(dict.fromkeys([cols.event_id, *cols.join_keys, *cols.request, ts_field]))
    events = _read_parquet(cols.events_path, "events", columns=wanted)
    if start_ts is not None:
        events = events[events[ts_field] >= start_ts]
    if end_ts is not None:
        events = events[events[ts_field] < end_ts]
    if events.empty:
        raise UserFacingError(f"no events in the time range [{start_ts}, {end_ts})")
    events = events.rename(columns={ts_field: EVENT_TIME})
    df = events.merge(labels[[cols.event_id, LABEL_TIME, cols.label]], on=cols.event_id, how="inner")
    if df.empty:
        raise UserFacingError(
            f"no labelled events in [{start_ts}, {end_ts}) with labels known at cutoff {cut} "
            f"({len(events)} events, {len(labels)} labels)"
        )
    df = df.drop_duplicates(cols.event_id).sort_values([EVENT_TIME, cols.event_id], kind="stable")
    df[EVENT_TIME] = df[EVENT_TIME].astype("datetime64[us, UTC]")
    df[LABEL_TIME] = df[LABEL_TIME].astype("datetime64[us, UTC]")
    df[ENTITY_TIME] = (df[EVENT_TIME] - ENTITY_OFFSET).astype("datetime64[us, UTC]")
    df[cols.label] = df[cols.label].astype("int64")
    return df[[*cols.ids, cols.label, *cols.request]].reset_index(drop=True)


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
    entities: pd.DataFrame, features: str | list[str] | None = None, join: str = "feast", store: Any = None
) -> pd.DataFrame:
    """Point-in-time features for ``entities`` (needs join keys, ``event_timestamp`` and the request
    fields), in entity order, entity columns first. ``features``: a feature service name or refs (default:
    the model's service). ``join``: ``feast`` or ``fast``."""
    from core.feast_store import get_store

    features = features or frame_columns().service
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
    if set(ent.columns) & set(features_df.columns):
        return pd.concat([ent, features_df], axis=1, copy=False)
    # one frame over the feature columns' own arrays (nobody else holds them): concat would consolidate them
    # into 2-D blocks, a copy of every feature column into fresh memory (page faults cost more than the copy
    # here). The caller's entity columns are copied, so changing the result never changes ``entities``.
    return pd.DataFrame({**{c: ent[c].copy() for c in ent.columns}, **{c: features_df[c] for c in features_df.columns}},
                        copy=False)


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
    features: str | list[str] | None = None,
    join: str = "feast",
    segments: bool = True,
) -> pd.DataFrame:
    """Labelled events in ``[start, end)`` (labels known at ``cutoff``) with their point-in-time features:
    id/time columns, the label, the request fields, the features (in the service's order) and, with
    ``segments``, the service's segment features (its ``segments`` tag) for per-segment evaluation."""
    from core.feast_store import get_store

    cols = frame_columns()
    store = get_store()
    entities = entity_frame(start, end, cutoff)
    df = historical_features(entities, features, join=join, store=store)
    if segments:
        names = set(df.columns)
        seg_refs = [r for r in cols.segment_refs if r.split(":")[1] not in names]
        if seg_refs:
            seg = fast_features(store, entities[[*cols.join_keys, ENTITY_TIME]], seg_refs)
            df = pd.concat([df, seg], axis=1)
    if len(df) != len(entities):
        raise RuntimeError(f"training frame has {len(df)} rows for {len(entities)} labelled events")
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
    features: str | list[str] | None = None,
    join: str = "feast",
    out_dir: Path | str | None = None,
) -> TrainingSet:
    """:func:`training_frame` saved as ``data.parquet`` + ``manifest.json`` (folder named by content hash).

    Default folder: ``<state_dir>/training_sets``, or ``<data dir>/training_sets`` when the data dir is on S3.
    ``manifest.json`` is written last and is the commit marker: a folder without it is incomplete."""
    from core.feast_store import get_store
    from training.validation import feature_stats

    cols = frame_columns()
    features = features or cols.service
    refs = resolve_refs(get_store(), features)
    df = training_frame(start, end, cutoff, features=features, join=join)
    names = [r.split(":", 1)[1] for r in refs]
    digest = content_hash(df)
    s = settings()
    manifest = {
        "feature_service": features if isinstance(features, str) else None,
        "feature_refs": refs,
        "features": names,
        "label": cols.label,
        "event_id": cols.event_id,
        "requested_range": [str(to_utc(start)) if start else None, str(to_utc(end)) if end else None],
        "label_cutoff": str(to_utc(cutoff)) if cutoff else None,
        "event_time_range": [df[EVENT_TIME].min().isoformat(), df[EVENT_TIME].max().isoformat()],
        "entity_timestamp": "event time - 1 microsecond",
        "rows": int(len(df)),
        "positives": int(df[cols.label].sum()),
        "label_rate": float(df[cols.label].mean()),
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
