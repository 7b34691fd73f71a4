"""Fast point-in-time join of entity rows against feature-view sources.

Two engines with the same result: ``sorted`` (default for single integer join keys): per view, one
sort of the source rows by (key, time) (a value sort of packed ``key | position`` integers, see
:func:`_feature_order`), a binary search of every entity row's composite (key, time) integer (numpy
``searchsorted``), then a gather of the feature columns chunk by chunk; views run on two threads,
largest first; ``duckdb``: an ASOF JOIN (any join keys).

Semantics are Feast's offline-store semantics, so both give identical frames:

- for each entity row (join keys, ``event_timestamp`` t) and each feature view, take the source row
  with the same join keys and the latest ``timestamp_field`` <= t (feature values stamped AFTER the
  entity time are never seen);
- if that row is older than the view's TTL (``feature_ts < t - ttl``; ``feature_ts == t - ttl`` is
  still valid, as in Feast), the view's features are null;
- entity rows with no feature history keep their place with nulls: the output has exactly the
  entity rows, in the entity order.

Two source rows of one key with the *same* timestamp are a tie that neither Feast nor this join
orders (no created timestamp is used); the streaming job never writes such ties.

:func:`pit_join` is pure (paths + specs); :func:`feast_view_specs` reads the specs from a Feast
registry so ``training.datasets`` can use this as a drop-in fast path for ``get_historical_features``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import UserFacingError
from core.storage import duckdb_connect, location

ROW_ID = "__row_id"


@dataclass(frozen=True)
class ViewSpec:
    """One feature view's batch source, as the join needs it."""

    name: str
    path: str  # a Parquet file or a folder of Parquet files
    join_keys: tuple[str, ...]
    features: tuple[str, ...]
    timestamp_field: str = "event_timestamp"
    ttl: timedelta | None = None
    field_mapping: dict[str, str] = field(default_factory=dict)  # source column -> feature name


_REGISTERED = "duckdb-table:"  # a view source already registered on the connection (S3: a pyarrow dataset)


def _source_sql(path: str) -> str:
    """What a view subquery reads: a registered table, or ``read_parquet`` over the source's data files
    (hidden/temporary names and markers skipped as pyarrow does)."""
    if path.startswith(_REGISTERED):
        return _q(path[len(_REGISTERED):])
    files = location(path).files()
    if not files:
        raise UserFacingError(f"no Parquet data at {path}")
    return "read_parquet([" + ", ".join("'" + f.replace("'", "''") + "'" for f in files) + "], union_by_name=true)"


def _register_s3_sources(con: Any, specs: list[ViewSpec]) -> list[ViewSpec]:
    """S3 sources are scanned by pyarrow (a dataset registered on ``con``, projection pushed down), not by
    DuckDB's Python-filesystem bridge, which has returned short reads under load."""
    out = []
    for i, spec in enumerate(specs):
        loc = location(spec.path)
        if loc.s3:
            con.register(f"__src{i}", loc.dataset())
            spec = replace(spec, path=f"{_REGISTERED}__src{i}")
        out.append(spec)
    return out


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _view_subquery(i: int, spec: ViewSpec) -> str:
    inverse = {v: k for k, v in spec.field_mapping.items()}
    cols = [f"{_q(inverse.get(k, k))} AS __k{i}_{j}" for j, k in enumerate(spec.join_keys)]
    cols.append(f"CAST({_q(spec.timestamp_field)} AS TIMESTAMPTZ) AS __ts{i}")
    cols += [f"{_q(inverse.get(f, f))} AS __f{i}_{j}" for j, f in enumerate(spec.features)]
    return f"(SELECT {', '.join(cols)} FROM {_source_sql(spec.path)})"


def build_query(specs: list[ViewSpec], ts_col: str, entity_cols: list[str]) -> str:
    """The ASOF JOIN query over ``entity`` (a registered table) and the view sources."""
    select = [f"e.{_q(c)}" for c in entity_cols]
    joins = []
    for i, spec in enumerate(specs):
        on = [f"e.{_q(k)} = v{i}.__k{i}_{j}" for j, k in enumerate(spec.join_keys)]
        on.append(f"e.{_q(ts_col)} >= v{i}.__ts{i}")
        joins.append(f"ASOF LEFT JOIN {_view_subquery(i, spec)} v{i} ON {' AND '.join(on)}")
        if spec.ttl is not None and spec.ttl.total_seconds() > 0:
            ttl_us = int(spec.ttl / timedelta(microseconds=1))
            fresh = f"v{i}.__ts{i} >= e.{_q(ts_col)} - to_microseconds({ttl_us})"
            select += [f"CASE WHEN {fresh} THEN v{i}.__f{i}_{j} END AS {_q(f)}" for j, f in enumerate(spec.features)]
        else:
            select += [f"v{i}.__f{i}_{j} AS {_q(f)}" for j, f in enumerate(spec.features)]
    return f"SELECT {', '.join(select)} FROM entity e {' '.join(joins)} ORDER BY e.{ROW_ID}"


def pit_join(
    entity: pd.DataFrame | pa.Table,
    specs: list[ViewSpec],
    ts_col: str = "event_timestamp",
    engine: str = "auto",
    threads: int | None = None,
    memory_limit: str | None = None,
) -> pa.Table:
    """Entity rows (in order) + the point-in-time features of every view in ``specs``, as Arrow.

    ``engine``: ``sorted`` (numpy sort + binary search; single integer join key per view), ``duckdb``
    (ASOF JOIN), or ``auto`` (``sorted`` when every view qualifies)."""
    table = entity if isinstance(entity, pa.Table) else pa.Table.from_pandas(entity, preserve_index=False)
    _validate(table, specs, ts_col)
    if engine == "auto":
        engine = "sorted" if all(_sortable(table, s) for s in specs) else "duckdb"
    if engine == "sorted":
        return _pit_join_sorted(table, specs, ts_col)
    if engine == "duckdb":
        return _pit_join_duckdb(table, specs, ts_col, threads, memory_limit)
    raise ValueError(f"unknown engine {engine!r}")


def _validate(table: pa.Table, specs: list[ViewSpec], ts_col: str) -> None:
    if ts_col not in table.column_names:
        raise UserFacingError(f"entity rows lack the timestamp column {ts_col!r}")
    for spec in specs:
        missing = [k for k in spec.join_keys if k not in table.column_names]
        if missing:
            raise UserFacingError(f"entity rows lack join key(s) {missing} of feature view {spec.name!r}")
    names = [f for s in specs for f in s.features]
    clash = {n for n in names if names.count(n) > 1} | (set(names) & set(table.column_names))
    if clash:
        raise UserFacingError(f"feature names clash (with each other or entity columns): {sorted(clash)}")
    ts_type = table.schema.field(ts_col).type
    if not pa.types.is_timestamp(ts_type) or ts_type.tz is None:
        raise UserFacingError(f"entity column {ts_col!r} must be a UTC timestamp, got {ts_type}")


def _pit_join_duckdb(
    table: pa.Table, specs: list[ViewSpec], ts_col: str, threads: int | None, memory_limit: str | None
) -> pa.Table:
    ts_type = table.schema.field(ts_col).type
    entity_cols = list(table.column_names)
    table = table.append_column(ROW_ID, pa.array(range(table.num_rows), pa.int64()))
    con = duckdb_connect()
    try:
        con.execute("SET TimeZone='UTC'")
        if threads:
            con.execute(f"SET threads={int(threads)}")
        if memory_limit:
            con.execute(f"SET memory_limit='{memory_limit}'")
        con.register("entity", table)
        specs = _register_s3_sources(con, specs)
        out = con.execute(build_query(specs, ts_col, entity_cols)).to_arrow_table()
    finally:
        con.close()
    if out.num_rows != table.num_rows:
        raise RuntimeError(f"point-in-time join returned {out.num_rows} rows for {table.num_rows} entity rows")
    # duckdb hands back TIMESTAMPTZ in the session zone; keep the entity's exact type
    idx = out.column_names.index(ts_col)
    return out.set_column(idx, ts_col, out.column(ts_col).cast(ts_type))


# ---------------------------------------------------------------- sorted (numpy) engine

_INT_TYPES = (pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32())


def _sortable(table: pa.Table, spec: ViewSpec) -> bool:
    return len(spec.join_keys) == 1 and table.schema.field(spec.join_keys[0]).type in _INT_TYPES


def _read_source(spec: ViewSpec) -> pa.Table:
    """Key, timestamp and feature columns of a view's Parquet source (file or folder), named as features."""
    inverse = {v: k for k, v in spec.field_mapping.items()}
    wanted = [*spec.join_keys, spec.timestamp_field, *spec.features]
    source_cols = [inverse.get(c, c) for c in wanted]
    dataset = location(spec.path).dataset()
    missing = [c for c in source_cols if c not in dataset.schema.names]
    if missing:
        raise UserFacingError(f"source of feature view {spec.name!r} ({spec.path}) lacks columns {missing}")
    return dataset.to_table(columns=source_cols).rename_columns(wanted)


def _time_ints(arr: pa.ChunkedArray | pa.Array, unit: str) -> tuple[np.ndarray, np.ndarray]:
    """Timestamps as int64 in ``unit`` (naive = UTC, as Feast reads them) and a validity mask."""
    return _ints(arr.cast(pa.timestamp(unit, tz="UTC")))


def _key_ints(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    return _ints(arr)


def _ints(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    arr = arr.cast(pa.int64())
    if arr.null_count == 0:
        return np.asarray(arr), np.ones(len(arr), dtype=bool)
    return np.asarray(arr.fill_null(0)), np.asarray(arr.is_valid())


def _feature_order(fk: np.ndarray, f_ts: np.ndarray) -> np.ndarray:
    """Permutation sorting feature rows by (key, time), stable (ties keep source order).

    One stable pass by time (free when the source is already in time order, as the stream job writes
    it; timsort merges pre-sorted runs cheaply), then a value sort of ``key << bits | position``:
    sorting plain int64 values is several times faster than ``argsort`` and, because the position is
    the low bits, equal keys stay in time order."""
    n = len(fk)
    t_order = None if bool(np.all(f_ts[1:] >= f_ts[:-1])) else np.argsort(f_ts, kind="stable")
    keys = fk if t_order is None else fk[t_order]
    bits = max(1, (n - 1).bit_length())
    if int(keys.max()) >= 1 << (62 - bits):
        return np.lexsort((f_ts, fk))
    packed = keys << bits
    packed |= np.arange(n, dtype=np.int64)
    packed.sort()
    packed &= (1 << bits) - 1
    return packed if t_order is None else t_order[packed]


def asof_indices(
    f_keys: np.ndarray, f_ts: np.ndarray, e_keys: np.ndarray, e_ts: np.ndarray, ttl: int | None
) -> np.ndarray:
    """For each entity (key, time): index of the feature row with that key and the latest time <= the
    entity time, or -1; -1 too if older than ``ttl``. Rows of one key with equal times are a tie
    (either may be returned), as in Feast."""
    if len(f_keys) == 0 or len(e_keys) == 0:
        return np.full(len(e_keys), -1, dtype=np.int64)
    limit = 2**62
    # keys: their values when small and non-negative, else dense ranks (unknown entity keys -> -1)
    kmin, kmax = int(min(f_keys.min(), e_keys.min())), int(max(f_keys.max(), e_keys.max()))
    if kmin >= 0 and kmax < 2**31:
        fk, ek, n_keys = f_keys, e_keys, kmax + 1
    else:
        uniq = np.unique(f_keys)
        fk = np.searchsorted(uniq, f_keys)
        pos = np.clip(np.searchsorted(uniq, e_keys), 0, len(uniq) - 1)
        ek = np.where(uniq[pos] == e_keys, pos, -1)
        n_keys = len(uniq)
    # times: offsets from the minimum, or (long ranges) dense ranks over both sides, which keep order
    lo = int(min(f_ts.min(), e_ts.min()))
    span = int(max(f_ts.max(), e_ts.max())) - lo + 1
    offsets = n_keys <= limit // span
    if offsets:
        ft, et = f_ts - lo, e_ts - lo
    else:
        times, inverse = np.unique(np.concatenate([f_ts, e_ts]), return_inverse=True)
        ft, et, span = inverse[: len(f_ts)], inverse[len(f_ts) :], len(times)
        if n_keys > limit // span:
            raise OverflowError("too many keys x distinct times for a 64-bit composite; use engine='duckdb'")
    order = _feature_order(fk, ft)
    f_sorted = fk * span
    f_sorted += ft
    f_sorted = f_sorted[order]
    e_comp = ek * span
    e_comp += et
    e_order = np.argsort(e_comp)  # searching in sorted order keeps the binary search cache-friendly
    pos = np.empty(len(e_comp), dtype=np.int64)
    pos[e_order] = np.searchsorted(f_sorted, e_comp[e_order], side="right") - 1
    found = f_sorted[np.maximum(pos, 0)]
    # the row found has the entity's key iff its composite is in the key's block [ek * span, e_comp]
    ok = (pos >= 0) & (found >= e_comp - et)
    if ttl is not None:
        if offsets:
            ok &= found >= e_comp - ttl
        else:
            ok &= f_ts[order[np.maximum(pos, 0)]] >= e_ts - ttl
    return np.where(ok, order[np.maximum(pos, 0)], -1)


def _pit_join_sorted(table: pa.Table, specs: list[ViewSpec], ts_col: str, workers: int = 2) -> pa.Table:
    """Every view's columns (:func:`_join_views`), appended in ``specs`` order."""
    out = table
    for spec, columns in zip(specs, _join_views(table, specs, ts_col, workers), strict=True):
        for f, col in zip(spec.features, columns, strict=True):
            out = out.append_column(f, col)
    return out


def _join_views(
    table: pa.Table, specs: list[ViewSpec], ts_col: str, workers: int = 2, with_timestamp: bool = False
) -> list[list[pa.Array]]:
    """:func:`_join_view` of every spec, in ``specs`` order. Views are independent: they run on ``workers``
    threads (Parquet decoding, numpy sorts and gathers release the GIL), largest sources first."""
    from concurrent.futures import ThreadPoolExecutor

    if workers <= 1 or len(specs) <= 1:
        return [_join_view(table, spec, ts_col, with_timestamp) for spec in specs]
    sizes = {spec.name: _source_bytes(spec.path) for spec in specs}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            spec.name: pool.submit(_join_view, table, spec, ts_col, with_timestamp)
            for spec in sorted(specs, key=lambda s: -sizes[s.name])
        }
        return [futures[spec.name].result() for spec in specs]


def _source_bytes(path: str) -> int:
    """Bytes of a source's data files (local or S3; one listing), 0 if unknown: orders the views' work."""
    loc = location(path)
    try:
        return sum(i.size or 0 for i in loc.fs.get_file_info(loc.files()))
    except OSError:
        return 0


def feature_timestamps(entity: pd.DataFrame | pa.Table, specs: list[ViewSpec], ts_col: str = "event_timestamp") -> pa.Table:
    """For each view, the timestamp of the source row the join picks per entity row (null: none), as
    ``<view>__feature_timestamp`` columns in entity order. Reads only keys and timestamps (leakage checks)."""
    table = entity if isinstance(entity, pa.Table) else pa.Table.from_pandas(entity, preserve_index=False)
    _validate(table, specs, ts_col)
    bare = [ViewSpec(s.name, s.path, s.join_keys, (), s.timestamp_field, s.ttl, s.field_mapping) for s in specs]
    parts = _join_views(table, bare, ts_col, with_timestamp=True)
    return pa.table({f"{spec.name}__feature_timestamp": cols[-1] for spec, cols in zip(specs, parts, strict=True)})


def _join_view(table: pa.Table, spec: ViewSpec, ts_col: str, with_timestamp: bool = False) -> list[pa.Array]:
    """The feature columns of one view, aligned with the entity rows (and, ``with_timestamp``, the
    picked rows' timestamps last)."""
    ts_type = table.schema.field(ts_col).type
    src = _read_source(spec)
    src_ts_type = src.schema.field(spec.timestamp_field).type
    unit = "ns" if "ns" in (ts_type.unit, getattr(src_ts_type, "unit", "us")) else "us"
    f_keys, fk_ok = _key_ints(src.column(spec.join_keys[0]))
    f_ts, ft_ok = _time_ints(src.column(spec.timestamp_field), unit)
    e_keys, ek_ok = _key_ints(table.column(spec.join_keys[0]))
    e_ts, et_ok = _time_ints(table.column(ts_col), unit)
    keep = fk_ok & ft_ok
    rows = np.flatnonzero(keep) if not keep.all() else None
    if rows is not None:
        f_keys, f_ts = f_keys[rows], f_ts[rows]
    ttl = None
    if spec.ttl is not None and spec.ttl.total_seconds() > 0:
        ttl = (spec.ttl // timedelta(microseconds=1)) * (1000 if unit == "ns" else 1)
    idx = asof_indices(f_keys, f_ts, e_keys, e_ts, ttl)
    idx[~(ek_ok & et_ok)] = -1
    if rows is not None:
        idx = np.where(idx >= 0, rows[np.maximum(idx, 0)], -1)
    gather = _Gather(idx, [len(c) for c in src.column(spec.timestamp_field).chunks])
    wanted = [*spec.features, *([spec.timestamp_field] if with_timestamp else [])]
    return [gather(src.column(f)) for f in wanted]


class _Gather:
    """Takes rows ``idx`` (-1: null) from chunked columns that share one chunk layout.

    Numeric columns without nulls go through numpy per chunk, in row order (zero-copy chunk views,
    cache-friendly reads); anything else through Arrow's ``take``."""

    def __init__(self, idx: np.ndarray, chunk_lengths: list[int]) -> None:
        self.missing = idx < 0
        self.safe = np.where(self.missing, 0, idx)
        self.lengths = chunk_lengths
        self.order = np.argsort(self.safe)
        sorted_idx = self.safe[self.order]
        self.bounds = np.concatenate([[0], np.cumsum(chunk_lengths, dtype=np.int64)])
        self.cuts = np.searchsorted(sorted_idx, self.bounds)
        self.local = sorted_idx
        self.null_mask = self.missing if self.missing.any() else None

    def __call__(self, column: pa.ChunkedArray) -> pa.Array:
        t = column.type
        fast = (pa.types.is_integer(t) or pa.types.is_floating(t)) and column.null_count == 0
        if not fast or [len(c) for c in column.chunks] != self.lengths:
            return column.take(pa.array(self.safe, mask=self.null_mask))
        out = np.empty(len(self.safe), dtype=t.to_pandas_dtype())
        for i, chunk in enumerate(column.chunks):
            a, b = self.cuts[i], self.cuts[i + 1]
            if a < b:
                values = chunk.to_numpy(zero_copy_only=True)
                out[self.order[a:b]] = values[self.local[a:b] - self.bounds[i]]
        return pa.array(out, mask=self.null_mask)


def feast_view_specs(store: Any, refs: list[str]) -> tuple[list[ViewSpec], list[Any], list[str]]:
    """Specs for the batch/stream views behind ``refs`` (``view:feature``), plus the on-demand views
    among them and the hidden input features those need. Unknown views or features raise."""
    from feast.errors import FeatureViewNotFoundException

    wanted: dict[str, list[str]] = {}
    odfvs = []
    for ref in refs:
        view, _, feat = ref.partition(":")
        if not feat:
            raise UserFacingError(f"feature reference {ref!r} is not of the form view:feature")
        wanted.setdefault(view, [])
        if feat not in wanted[view]:
            wanted[view].append(feat)
    extra: list[str] = []
    resolved: dict[str, Any] = {}
    for view in list(wanted):
        fv = _lookup(store, view)
        if fv is None:
            raise UserFacingError(f"unknown feature view {view!r} (in references {refs})")
        known = [f.name for f in fv.features]
        unknown = [f for f in wanted[view] if f not in known]
        if unknown:
            raise UserFacingError(f"feature view {view!r} has no feature(s) {unknown}; it has {known}")
        if type(fv).__name__ == "OnDemandFeatureView":
            odfvs.append((fv, wanted.pop(view)))
            for proj in fv.source_feature_view_projections.values():
                for f in proj.features:
                    if f.name not in wanted.setdefault(proj.name, []):
                        wanted[proj.name].append(f.name)
                        extra.append(f.name)
        else:
            resolved[view] = fv
    specs = []
    for view, feats in wanted.items():
        fv = resolved.get(view) or _lookup(store, view)
        if fv is None:
            raise FeatureViewNotFoundException(view)
        src = fv.batch_source
        specs.append(
            ViewSpec(
                name=view,
                path=src.path,
                join_keys=tuple(e.name for e in fv.entity_columns),
                features=tuple(feats),
                timestamp_field=src.timestamp_field,
                ttl=fv.ttl,
                field_mapping=dict(src.field_mapping or {}),
            )
        )
    return specs, odfvs, extra


def _lookup(store: Any, name: str) -> Any:
    for getter in ("get_feature_view", "get_stream_feature_view", "get_on_demand_feature_view"):
        try:
            return getattr(store, getter)(name)
        except Exception:  # noqa: BLE001 - Feast raises a different NotFound per kind
            continue
    return None


def apply_on_demand(table: pa.Table, odfvs: list[tuple[Any, list[str]]]) -> pa.Table:
    """Run on-demand views exactly as Feast's retrieval job does (``transform_arrow``), keep requested outputs."""
    for odfv, feats in odfvs:
        out = odfv.transform_arrow(table, False)
        for f in feats:
            table = table.append_column(f, out.column(f))
    return table
