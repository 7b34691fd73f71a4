"""Backfill and offline rows: the stream features recomputed from the raw event log with the stream job's
own tile code (:mod:`streaming.state_schema`, :mod:`streaming.tiles`), as a Spark batch job.

Offline rows (one per event, as of that event): events of the whole UTC hours covering [start, end)
plus the longest window before them are turned into per-timestamp tiles by the stream job's tile
aggregation (grouped by entity and event time instead of tile), and each event's row is merged from
the tiles of its window with the same function the stream job uses online
(:func:`streaming.tiles.features_from_tiles`). Executors write ``<view folder>/h<hour>-b<bucket>.parquet``
(a fixed number of entity buckets): a rerun, a replay or a reset of the stream job rewrites the same
files with the same rows, never a duplicate. Names are deterministic, so this also holds on an object
store, which has no rename: each object appears whole when its upload completes (:mod:`core.storage`).

Online (``materialize=True``): the tiles of the events before ``end`` are written to Redis (those
older than an entity's longest window are pruned) and merged into Feast rows exactly as the stream job
does (:mod:`streaming.tile_store`), ``ONLINE_CHUNK_ROWS`` tiles at a time per executor, sorted by entity so
an entity's tiles are written and merged together (a 20 M-event history no longer needs a partition's
tiles in one Python worker's memory). This
seeds a stream job (new features, new views, a new checkpoint) and restores Redis after a loss.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from core.storage import data_root, location
from streaming.feature_specs import ViewSpec, load_stream_spec

log = logging.getLogger(__name__)
OFFLINE_BUCKETS = 8  # fixed: file names must not depend on run arguments
HOUR_US = 3_600_000_000
ONLINE_CHUNK_ROWS = 200_000  # tile rows an executor holds at once when writing Redis (entities never split)
_OFFLINE_NAME = re.compile(r"h\d{8}T\d{2}-b\d{2}\.parquet$")  # the files this module writes


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


def _us(ts: datetime) -> int:
    return int((ts - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))


def history_path(store) -> str:
    """Folder of the raw event log: the batch source of the stream views' KafkaSource, else the data dir."""
    from streaming.feature_specs import stream_source

    source = stream_source(store)
    path = getattr(getattr(source, "batch_source", None), "path", None)
    return path or (data_root() / "transactions").uri


def offline_rows(spec: ViewSpec, frame: pd.DataFrame, start_us: int, end_us: int) -> pd.DataFrame:
    """Per-event rows of the events in [start_us, end_us) from per-(entity, event time) tiles ``frame``.

    Vectorised over all rows: each event's window is a run [j, i] of the sorted per-timestamp tiles of its
    entity; counts and exact sums come from prefix sums, min/max from ``reduceat``, distinct values from a
    sliding multiset; the values from :func:`streaming.tiles.finalize_arrays`, as for the online merge.
    """
    from collections import Counter

    from streaming.state_schema import entity_values
    from streaming.tiles import decimal_units, finalize_arrays

    frame = frame.sort_values(["ks" if spec.string_key else "k", "ts_us"], kind="stable").reset_index(drop=True)
    n = len(frame)
    keys = entity_values(spec, frame)
    ts = frame["ts_us"].to_numpy(np.int64)
    seg_first = np.zeros(n, np.int64)
    if n:
        new_key = np.r_[True, keys[1:] != keys[:-1]]
        seg_first = np.maximum.accumulate(np.where(new_key, np.arange(n), 0))
    out_mask = (ts >= start_us) & (ts < end_us)
    rows_idx = np.flatnonzero(out_mask)
    result = {}
    for agg in spec.aggs:
        col = agg.column
        tile = spec.tile_of(agg)
        lo = (ts // tile) * tile + tile - agg.window_us
        # first row of the same entity with ts >= lo: binary search inside each entity's run
        j = seg_first.copy()
        hi = np.arange(n)
        lo_idx = seg_first.copy()
        while True:  # vectorised bisection (rows are sorted by ts within an entity)
            active = lo_idx < hi
            if not active.any():
                break
            mid = (lo_idx + hi) // 2
            go_right = active & (ts[np.minimum(mid, n - 1)] < lo)
            lo_idx = np.where(go_right, mid + 1, lo_idx)
            hi = np.where(active & ~go_right, mid, hi)
        j = lo_idx
        ii = rows_idx
        jj = j[ii]

        def window_sum(name: str, exact: bool):
            if name not in frame:
                return [0] * len(ii) if exact else np.zeros(len(ii), np.int64)
            if exact:
                arr = np.array([0 if v is None else decimal_units(v) for v in frame[name]], dtype=object)
            else:
                arr = frame[name].fillna(0).to_numpy(np.int64)
            cum = np.concatenate([np.zeros(1, dtype=arr.dtype), np.cumsum(arr)])
            res = cum[ii + 1] - cum[jj]
            return list(res) if exact else res.astype(np.int64)

        def window_reduce(name: str, ufunc):
            if name not in frame or not len(ii):
                return np.full(len(ii), np.nan)
            arr = np.append(frame[name].to_numpy(np.float64, na_value=np.nan), np.nan)
            idx = np.empty(2 * len(ii), np.int64)
            idx[0::2], idx[1::2] = jj, ii + 1
            return ufunc.reduceat(arr, idx)[0::2]

        fn = agg.function
        cnt = window_sum(f"c__{col}", False) if fn not in ("count_distinct", "seconds_since_previous") else None
        sums = window_sum(f"s__{col}", True) if fn in ("sum", "mean", "avg", "std", "stddev", "var", "variance") else None
        sq = window_sum(f"q__{col}", True) if fn in ("std", "stddev", "var", "variance") else None
        mn = window_reduce(f"mn__{col}", np.fmin) if fn == "min" else np.full(len(ii), np.nan)
        mx = window_reduce(f"mx__{col}", np.fmax) if fn == "max" else np.full(len(ii), np.nan)
        distinct = np.zeros(len(ii), np.int64)
        if fn == "count_distinct":
            sets = frame[f"d__{col}"].tolist()
            counter: Counter = Counter()
            a = b = 0  # the multiset holds rows [a, b)
            for r, (i, jw) in enumerate(zip(ii.tolist(), jj.tolist(), strict=True)):
                if jw >= b or i + 1 < a:  # another entity or a jump: restart
                    counter, a, b = Counter(), jw, jw
                while b <= i:
                    counter.update(() if sets[b] is None else list(sets[b]))
                    b += 1
                while a < jw:
                    counter.subtract(() if sets[a] is None else list(sets[a]))
                    a += 1
                distinct[r] = sum(1 for c in counter.values() if c > 0)
        prev = np.where(ii > jj, ts[np.maximum(ii - 1, 0)], -1) if fn == "seconds_since_previous" else np.full(len(ii), -1)
        zeros = [0] * len(ii)
        result[agg.name] = finalize_arrays(agg, cnt if cnt is not None else np.zeros(len(ii), np.int64),
                                           sums if sums is not None else zeros, sq if sq is not None else zeros,
                                           mn, mx, distinct, prev, ts[ii])
    reps = frame["n_events"].to_numpy(np.int64)[rows_idx]
    out = pd.DataFrame({spec.join_key: np.repeat(keys[rows_idx], reps), "event_timestamp": np.repeat(ts[rows_idx], reps)})
    for agg in spec.aggs:
        col = np.repeat(np.asarray(result[agg.name], dtype=np.float64), reps)
        out[agg.name] = col.astype(np.int64) if agg.is_int else col
    return out


def _offline_fn(spec: ViewSpec, start_us: int, end_us: int, folder: str):
    def run(frames):
        from streaming.offline_writer import write_offline

        parts = [f for f in frames if len(f)]
        if not parts:
            return
        frame = pd.concat(parts, ignore_index=True)
        out = []
        for bucket, part in frame.groupby("bucket"):
            rows = offline_rows(spec, part, start_us, end_us)
            hours = rows["event_timestamp"].to_numpy(np.int64) // HOUR_US
            for hour in np.unique(hours):
                stamp = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(hours=int(hour))
                write_offline(spec, rows[hours == hour], f"h{stamp:%Y%m%dT%H}-b{int(bucket):02d}", folder)
            out.append((int(bucket), len(rows)))
        yield pd.DataFrame(out, columns=["bucket", "rows"])

    return run


def entity_slices(keys: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """Row ranges of ``keys`` (sorted) of about ``chunk`` rows (more to finish an entity, fewer for the last
    range) that never split an entity, covering every row before the last entity's rows (which may continue
    in the next batch)."""
    if not len(keys):
        return []
    cut = int(np.searchsorted(keys, keys[-1], "left"))
    out, lo = [], 0
    while lo < cut:
        hi = int(np.searchsorted(keys, keys[min(lo + chunk, cut) - 1], "right"))
        out.append((lo, hi))
        lo = hi
    return out


def _online_fn(spec: ViewSpec, online, chunk: int, max_entities: int):
    """Writes a partition's tiles (sorted by entity) ``chunk`` rows at a time, each entity whole: memory
    stays bounded however many tiles a partition holds."""
    def run(frames):
        from streaming.tile_store import tile_ttl_s, write_view_rows

        ttl_s = tile_ttl_s(spec.max_window_us)
        tiles = rows = 0
        pending: list[pd.DataFrame] = []
        size = 0

        def write(frame: pd.DataFrame) -> None:
            nonlocal tiles, rows
            t, r = write_view_rows(spec, frame, online, ttl_s, max_entities=max_entities)
            tiles, rows = tiles + t, rows + r

        try:
            for frame in frames:
                if not len(frame):
                    continue
                pending.append(frame)
                size += len(frame)
                if size < chunk:
                    continue
                buf = pd.concat(pending, ignore_index=True)
                slices = entity_slices(buf["k"].to_numpy(np.int64), chunk)
                for lo, hi in slices:
                    write(buf.iloc[lo:hi])
                rest = buf.iloc[slices[-1][1] if slices else 0:]
                pending, size = [rest], len(rest)
            if size:
                write(pd.concat(pending, ignore_index=True))
        finally:
            online.close()
        yield pd.DataFrame({"tiles": [tiles], "rows": [rows]})

    return run


def run_backfill(start: datetime, end: datetime, spark=None, store=None, master: str | None = None,
                 materialize: bool = True, buckets: int | None = None,
                 source_path: str | None = None, offline_dirs: dict[str, str] | None = None,
                 views: tuple[str, ...] | None = None, online_writer: str = "pipelined") -> BackfillResult:
    """Offline rows of the events in the UTC hours covering [start, end), then (optionally) Redis tiles + rows.

    ``views``: only these stream views (default all). ``buckets``/``online_writer``: accepted for
    compatibility, ignored (file names use a fixed bucket count; online rows go through the tile writer).
    """
    from pyspark.sql import functions as F

    from core.contracts import event_id_field, stream_rules
    from streaming import tile_store
    from streaming.parsing import valid_history_condition
    from streaming.state_schema import drop_duplicate_history, tile_aggregation, tile_rows

    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("start and end must be timezone-aware")
    if end <= start:
        raise ValueError("backfill needs start < end")
    if store is None:
        from core.feast_store import get_store

        store = get_store()
    spec = load_stream_spec(store)
    chosen = tuple(v for v in spec.views if views is None or v.name in views)
    if spark is None:
        from streaming.spark_session import build_session

        spark = build_session("rtml-backfill", master, kafka=False)
    path = source_path or history_path(store)
    if not location(path).files():
        from core.errors import UserFacingError

        raise UserFacingError(f"no historical events under {path} (run `rtml simulate` first)")
    result = BackfillResult(start=start, end=end)
    start_us = (_us(start) // HOUR_US) * HOUR_US
    end_us = -((-_us(end)) // HOUR_US) * HOUR_US
    context_us = start_us - max(v.max_window_us + v.tile_us for v in chosen)
    t0 = time.perf_counter()
    rules = spec.rules or stream_rules()
    history = drop_duplicate_history(  # an event logged twice counts once, as in the stream job
        spark.read.parquet(location(path).spark_uri)
        .withColumn("event_us", F.unix_micros(F.col(rules.timestamp_field)))
        .where(valid_history_condition(rules))
        .where((F.col("event_us") >= F.lit(context_us)) & (F.col("event_us") < F.lit(end_us))),
        event_id_field(rules),
    ).cache()
    result.events_read = history.where(F.col("event_us") >= F.lit(_us(start))).where(
        F.col("event_us") < F.lit(_us(end))).count()
    for view in chosen:
        folder = (offline_dirs or {}).get(view.name, view.offline_path)
        location(folder).mkdir()
        rows = tile_rows(history, (view,), with_dead_letters=False)
        per_ts = tile_aggregation(rows, (view,), keys=("k", "ts_us"), extra=[F.count(F.lit(1)).alias("n_events")])
        per_ts = per_ts.withColumn("bucket", F.pmod(F.xxhash64("k"), F.lit(OFFLINE_BUCKETS)))
        written = per_ts.repartition(OFFLINE_BUCKETS, "bucket").mapInPandas(
            _offline_fn(view, start_us, end_us, folder), "bucket long, rows long").collect()
        result.rows_written[view.name] = int(sum(r["rows"] for r in written))
        result.files[view.name] = [p.uri for p in location(folder).glob("h") if _OFFLINE_NAME.match(p.name)]
    result.compute_seconds = time.perf_counter() - t0
    if materialize:
        from core.online_store import OnlineStore

        online = OnlineStore.from_settings(feast_store=store)
        t1 = time.perf_counter()
        for view in chosen:
            # every entity's tiles (its latest event may be long before `end`); old tiles are pruned on write
            until = history.where(F.col("event_us") < F.lit(_us(end)))
            tiles = tile_aggregation(tile_rows(until, (view,), with_dead_letters=False), (view,))
            tiles = tiles.withColumn("wend_us", F.unix_micros("wend")).drop("wend")
            parts = tiles.repartition(max(spark.sparkContext.defaultParallelism, 1), "k").sortWithinPartitions("k")
            done = parts.mapInPandas(_online_fn(view, online, ONLINE_CHUNK_ROWS, tile_store.MAX_ENTITIES_PER_WRITE), "tiles long, rows long").collect()
            result.materialized[view.name] = int(sum(r["rows"] for r in done))
        result.materialize_seconds = time.perf_counter() - t1
    history.unpersist()
    log.info("backfill %s..%s: %d events, rows %s, compute %.1fs, online %s in %.1fs", start, end,
             result.events_read, result.rows_written, result.compute_seconds, result.materialized,
             result.materialize_seconds)
    return result
