"""Backfill: the stream features recomputed from historical raw events with the stream job's own
transformation (:mod:`streaming.aggregates`), as a Spark batch job, then re-materialized into Redis.

Events of [start - longest window, end) are read from the raw transactions folder, split by entity
into buckets, and each bucket (on an executor) computes the exact rows of its events in [start, end)
and writes them to ``<view folder>/backfill-<start>-<end>-p<bucket>.parquet``. A rerun of the same
range overwrites those names and only then removes the range's parts it did not write again, so on an
object store (no rename) a replay neither duplicates nor loses rows. Then a full materialization over
[start, end) (:mod:`streaming.materialize`; Feast's own materialize refuses windowed stream views) loads every entity's latest value into Redis,
which also restores Redis after it lost its data.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pandas as pd

from core.settings import settings
from core.storage import data_root, location
from streaming.aggregates import TS, aggregate, range_index, sort_events
from streaming.feature_specs import ViewSpec, load_stream_spec
from streaming.materialize import materialize_views
from streaming.offline_writer import write_offline

log = logging.getLogger(__name__)
HISTORY_SOURCE = "transactions_history"


@dataclass
class BackfillResult:
    start: datetime
    end: datetime
    events_read: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)
    compute_seconds: float = 0.0
    materialize_seconds: float = 0.0
    files: dict[str, list[str]] = field(default_factory=dict)
    materialized: dict[str, int] = field(default_factory=dict)


def _writer(store, kind: str):
    import redis

    from streaming.online_writer import FeastOnlineWriter, PipelinedOnlineWriter

    client = redis.Redis.from_url(settings().redis_url, socket_connect_timeout=2, socket_timeout=30)
    if kind == "feast":
        return FeastOnlineWriter(store, client)
    return PipelinedOnlineWriter(client, store.config.project, store.config.entity_key_serialization_version)


def _us(ts: datetime) -> int:
    return int((ts - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def range_tag(start: datetime, end: datetime) -> str:
    return f"backfill-{start:%Y%m%dT%H%M%S}-{end:%Y%m%dT%H%M%S}"


def history_path(store) -> str:
    """Folder of the raw event history: the KafkaSource's batch source in the registry, else the data dir."""
    try:
        return store.get_data_source(HISTORY_SOURCE).path
    except Exception:  # noqa: BLE001
        return (data_root() / "transactions").uri


def _bucket_fn(spec: ViewSpec, start_us: int, end_us: int, stem: str, folder: str):
    """The per-bucket function run by Spark: same sort/aggregate as the stream job."""

    def compute(pdf: pd.DataFrame) -> pd.DataFrame:
        if pdf.empty:
            return pd.DataFrame({"bucket": pd.Series([], dtype="int64"), "rows": pd.Series([], dtype="int64")})
        bucket = int(pdf["bucket"].iloc[0])
        events = sort_events(pdf.rename(columns={"event_us": TS}), spec)
        rows = aggregate(events, spec, range_index(events, start_us, end_us))
        write_offline(spec, rows, f"{stem}-p{bucket:04d}", folder)
        return pd.DataFrame({"bucket": [bucket], "rows": [len(rows)]})

    return compute


def _drop_stale_parts(folder: str, stem: str, buckets: set[int]) -> list[str]:
    """After this run's parts are written: remove parts of the same range it did not rewrite; the parts kept."""
    kept = []
    for part in location(folder).glob(f"{stem}-p"):
        if int(part.name[len(stem) + 2:-len(".parquet")]) in buckets:
            kept.append(part.uri)
        else:
            part.delete()
    return kept


def run_backfill(start: datetime, end: datetime, spark=None, store=None, master: str | None = None,
                 materialize: bool = True, buckets: int = 4,
                 source_path: str | None = None, offline_dirs: dict[str, str] | None = None,
                 online_writer: str = "pipelined") -> BackfillResult:
    """Recompute the stream views for events in [start, end) into the offline store, then materialize."""
    from pyspark.sql import functions as F

    from core.contracts import stream_rules
    from streaming.parsing import valid_history_condition

    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("backfill needs start < end")
    if store is None:
        from core.feast_store import get_store

        store = get_store()
    spec = load_stream_spec(store)
    if spark is None:
        from streaming.spark_session import build_session

        spark = build_session("rtml-backfill", master, kafka=False)
    path = source_path or history_path(store)
    if not location(path).files():
        from core.errors import UserFacingError

        raise UserFacingError(f"no historical events under {path} (run `rtml simulate` first)")
    result = BackfillResult(start=start, end=end)
    start_us, end_us = _us(start), _us(end)
    context_us = start_us - max(v.max_window_us for v in spec.views)
    t0 = time.perf_counter()
    raw = spark.read.parquet(location(path).spark_uri)
    history = (
        raw.withColumn("event_us", F.unix_micros(F.col("event_timestamp")))
        .where(valid_history_condition(spec.rules or stream_rules()))
        .where((F.col("event_us") > F.lit(context_us)) & (F.col("event_us") < F.lit(end_us)))
    )
    history = history.cache()
    result.events_read = history.where(F.col("event_us") >= F.lit(start_us)).count()
    stem = range_tag(start, end)
    for view in spec.views:
        folder = (offline_dirs or {}).get(view.name, view.offline_path)
        cols = [F.col(view.join_key).cast("bigint"), F.col("event_us")]
        cols += [F.col(c).cast("double") for c in view.value_columns]
        df = history.select(*cols).withColumn("bucket", F.pmod(F.xxhash64(view.join_key), F.lit(buckets)))
        out = df.groupBy("bucket").applyInPandas(
            _bucket_fn(view, start_us, end_us, stem, folder), schema="bucket long, rows long"
        )
        written = out.collect()
        result.rows_written[view.name] = int(sum(r["rows"] for r in written))
        result.files[view.name] = _drop_stale_parts(folder, stem, {int(r["bucket"]) for r in written if r["rows"]})
    history.unpersist()
    result.compute_seconds = time.perf_counter() - t0
    if materialize:
        t1 = time.perf_counter()
        result.materialized = materialize_views(spec.views, start, end, _writer(store, online_writer), offline_dirs)
        result.materialize_seconds = time.perf_counter() - t1
    log.info("backfill %s..%s: %d events, rows %s, compute %.1fs, materialize %.1fs", start, end,
             result.events_read, result.rows_written, result.compute_seconds, result.materialize_seconds)
    return result
