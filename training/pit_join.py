"""Fast point-in-time join of entity rows against feature-view sources.

Two engines with the same result: ``sorted`` (default for single integer join keys) and ``duckdb`` (an
ASOF JOIN, any join keys). ``sorted``, per view (views on two threads, largest first):

- read the source's key and timestamp columns only;
- one compiled merge pass (numba, :func:`_asof_scan`) over the feature rows and the entity rows in
  time order, keeping the latest row per key: no sort of the feature rows when they are in time order
  (as the stream job writes them; else one stable argsort), one entity time order for all views;
- read the feature columns row group by row group and take the picked rows from each as it is
  decoded (the feature columns are never held whole), then put them in entity order.

Local files are memory-mapped; S3 objects are fetched whole (one GET each, every view's objects from
the start, on four threads) while earlier views are joined (:class:`_Source`).

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

import threading
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from core.arrow_memory import use_fast_pool
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
    use_fast_pool()
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
        out = con.sql(build_query(specs, ts_col, entity_cols)).to_arrow_table()
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


class _Source:
    """A view's Parquet data files (a file or a folder), each opened once for the join's two passes.

    Local files are memory-mapped. S3 objects are fetched whole, one GET each (no footer or column-chunk
    requests), on a pool shared by the views and ahead of decoding (:meth:`start`); a view's objects then
    stay in memory (compressed) until the view is joined."""

    def __init__(self, spec: ViewSpec) -> None:
        inverse = {v: k for k, v in spec.field_mapping.items()}
        self.spec = spec
        self.names = {c: inverse.get(c, c) for c in (*spec.join_keys, spec.timestamp_field, *spec.features)}
        self.loc = location(spec.path)
        self.infos = self.loc.file_infos()  # one listing (sizes included)
        if not self.infos:
            raise UserFacingError(f"no Parquet data at {spec.path}")
        self.bytes = sum(i.size or 0 for i in self.infos)
        self._files: list[Any] | None = None
        self._schema: pa.Schema | None = None

    def start(self, pool: Any = None) -> _Source:
        """Open the files (S3: submit the object fetches to ``pool``, else fetch on a pool of 4)."""
        if self._files is not None:
            return self
        if not self.loc.s3:
            self._files = [pq.ParquetFile(i.path, memory_map=True) for i in self.infos]
            return self
        fs = self.loc.fs

        def fetch(path: str) -> pq.ParquetFile:
            # one ranged GET of the whole object (pyarrow's S3 input *stream* reads it several times slower)
            with fs.open_input_file(path) as f:
                return pq.ParquetFile(pa.BufferReader(f.read_buffer()))

        if pool is None:
            from concurrent.futures import ThreadPoolExecutor

            own = ThreadPoolExecutor(max_workers=_FETCHERS)
            self._files = [own.submit(fetch, i.path) for i in self.infos]
            own.shutdown(wait=False)
        else:
            self._files = [pool.submit(fetch, i.path) for i in self.infos]
        return self

    @property
    def schema(self) -> pa.Schema:
        """The first file's schema (the source's columns must be there)."""
        if self._schema is None:
            schema = self.file(0).schema_arrow
            missing = [c for c in self.names.values() if c not in schema.names]
            if missing:
                raise UserFacingError(
                    f"source of feature view {self.spec.name!r} ({self.spec.path}) lacks columns {missing}")
            self._schema = schema
        return self._schema

    def file(self, i: int) -> pq.ParquetFile:
        f = self.start()._files[i]
        return f if isinstance(f, pq.ParquetFile) else f.result()

    def type(self, name: str) -> pa.DataType:
        return self.schema.field(self.names[name]).type

    def read(self, names: list[str], row_group: tuple[int, int] | None = None) -> list[pa.ChunkedArray]:
        """Columns ``names`` (join names) of every file, or of one (file, row group), cast to the first
        file's types (a column a file lacks is null there)."""
        self.schema  # noqa: B018 - checks the columns before any is read
        cols = list(dict.fromkeys(self.names[n] for n in names))
        if row_group is None:
            files = (self.file(i) for i in range(len(self.infos)))  # in order: decode each as it arrives
            parts = [pf.read(columns=[c for c in cols if c in pf.schema_arrow.names]) for pf in files]
        else:
            pf = self.file(row_group[0])
            parts = [pf.read_row_group(row_group[1], columns=[c for c in cols if c in pf.schema_arrow.names])]
        out = []
        for n in names:
            c, t = self.names[n], self.type(n)
            chunks = []
            for table in parts:
                col = table.column(c) if c in table.column_names else pa.nulls(table.num_rows, t)
                chunks += (col if col.type == t else col.cast(t)).chunks
            out.append(pa.chunked_array(chunks, t))
        return out

    def row_groups(self) -> list[tuple[int, int]]:
        return [(f, g) for f in range(len(self.infos)) for g in range(self.file(f).metadata.num_row_groups)]


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


def _asof_scan(fk, ft, f_order, ek, et, e_order, n_keys, ttl, out):  # pragma: no cover - compiled (_kernel)
    """One merge pass over feature rows and entity rows, both in time order (``f_order`` / ``e_order``;
    an empty ``f_order`` means the feature rows are in time order already). ``last[key]`` is the latest
    feature row of ``key`` so far; every entity row reads it once all feature rows stamped at or before
    its time have been seen. ``ttl`` < 0: no TTL. Keys outside ``[0, n_keys)`` have no history (-1)."""
    last = np.full(n_keys, -1, dtype=np.int64)
    identity = f_order.shape[0] == 0
    nf = fk.shape[0] if identity else f_order.shape[0]
    i = 0
    for jj in range(e_order.shape[0]):
        j = e_order[jj]
        t = et[j]
        while i < nf:
            r = i if identity else f_order[i]
            if ft[r] > t:
                break
            last[fk[r]] = r
            i += 1
        k = ek[j]
        r = last[k] if 0 <= k < n_keys else -1
        if r >= 0 and ttl >= 0 and ft[r] < t - ttl:
            r = -1
        out[j] = r


_KERNEL: list[Any] = []
_KERNEL_LOCK = threading.Lock()


def _kernel() -> Any:
    """:func:`_asof_scan` compiled (numba imported, machine code loaded from its cache, on first use)."""
    with _KERNEL_LOCK:
        if not _KERNEL:
            from core.compiled import compile_nogil

            _KERNEL.append(compile_nogil(_asof_scan))
        return _KERNEL[0]


def _ints_ro(a: np.ndarray) -> np.ndarray:
    """``a`` as a C-contiguous, read-only int64 array: one kernel signature whatever the input's flags."""
    v = np.ascontiguousarray(a, dtype=np.int64).view()
    v.flags.writeable = False
    return v


def _warm_kernel() -> None:
    """Load the kernel for the signature the join uses (run on a thread while the sources are read)."""
    z = _ints_ro(np.zeros(1, dtype=np.int64))
    try:
        _kernel()(z, z, z[:0], z, z, z, 1, -1, np.zeros(1, dtype=np.int64))
    except Exception:  # noqa: BLE001 - the join's own call raises the same error where it is seen
        pass


def _is_sorted(a: np.ndarray) -> bool:
    return len(a) < 2 or bool(np.all(a[1:] >= a[:-1]))


def time_order(ts: np.ndarray) -> np.ndarray:
    """Positions of ``ts`` in time order (stable)."""
    return np.arange(len(ts), dtype=np.int64) if _is_sorted(ts) else np.argsort(ts, kind="stable")


def asof_indices(
    f_keys: np.ndarray,
    f_ts: np.ndarray,
    e_keys: np.ndarray,
    e_ts: np.ndarray,
    ttl: int | None,
    e_order: np.ndarray | None = None,
) -> np.ndarray:
    """For each entity (key, time): index of the feature row with that key and the latest time <= the
    entity time, or -1; -1 too if older than ``ttl``. Rows of one key with equal times are a tie
    (the later one in source order is returned), as in Feast.

    No sort of the feature rows when they are in time order (as the stream job writes them): a single
    compiled merge pass (:func:`_asof_scan`). ``e_order``: the entity rows' time order, if known (views
    share it)."""
    out = np.full(len(e_keys), -1, dtype=np.int64)
    if len(f_keys) == 0 or len(e_keys) == 0:
        return out
    f_keys, e_keys, f_ts, e_ts = (np.asarray(a, dtype=np.int64) for a in (f_keys, e_keys, f_ts, e_ts))
    # keys: their values when small and non-negative (a table of the latest row per key), else dense ranks
    kmin, kmax = int(f_keys.min()), int(f_keys.max())
    if kmin >= 0 and kmax < max(1 << 22, len(f_keys)):
        fk, ek, n_keys = f_keys, e_keys, kmax + 1
    else:
        uniq = np.unique(f_keys)
        fk = np.searchsorted(uniq, f_keys)
        pos = np.clip(np.searchsorted(uniq, e_keys), 0, len(uniq) - 1)
        ek = np.where(uniq[pos] == e_keys, pos, -1)
        n_keys = len(uniq)
    f_order = np.empty(0, dtype=np.int64) if _is_sorted(f_ts) else np.argsort(f_ts, kind="stable")
    if e_order is None:
        e_order = time_order(e_ts)
    fk, f_ts, f_order, ek, e_ts, e_order = map(_ints_ro, (fk, f_ts, f_order, ek, e_ts, e_order))
    _kernel()(fk, f_ts, f_order, ek, e_ts, e_order, n_keys, -1 if ttl is None else int(ttl), out)
    return out


def _pit_join_sorted(table: pa.Table, specs: list[ViewSpec], ts_col: str, workers: int = 2) -> pa.Table:
    """Every view's columns (:func:`_join_views`), appended in ``specs`` order."""
    out = table
    for spec, columns in zip(specs, _join_views(table, specs, ts_col, workers), strict=True):
        for f, col in zip(spec.features, columns, strict=True):
            out = out.append_column(f, col)
    return out


_FETCHERS = 8  # concurrent S3 object fetches of one join


def _join_views(
    table: pa.Table, specs: list[ViewSpec], ts_col: str, workers: int = 2, with_timestamp: bool = False
) -> list[list[pa.Array]]:
    """:func:`_join_view` of every spec, in ``specs`` order. Views are independent: they run on ``workers``
    threads (Parquet decoding, the merge pass and gathers release the GIL), largest sources first; S3
    objects of all views are fetched from the start, in that order, while earlier views are joined."""
    from concurrent.futures import ThreadPoolExecutor

    threading.Thread(target=_warm_kernel, name="pit-kernel", daemon=True).start()  # overlaps the first reads
    with ThreadPoolExecutor(max_workers=_FETCHERS) as fetchers:
        listings = [fetchers.submit(_Source, spec) for spec in specs]  # S3 listings side by side
        e_order = time_order(_time_ints(table.column(ts_col), table.schema.field(ts_col).type.unit)[0])
        sources = [f.result() for f in listings]
        by_size = sorted(range(len(specs)), key=lambda i: -sources[i].bytes)
        for i in by_size:
            sources[i].start(fetchers)
        if workers <= 1 or len(specs) <= 1:
            return [_join_view(table, src, ts_col, with_timestamp, e_order) for src in sources]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {i: pool.submit(_join_view, table, sources[i], ts_col, with_timestamp, e_order) for i in by_size}
            return [futures[i].result() for i in range(len(specs))]


def feature_timestamps(entity: pd.DataFrame | pa.Table, specs: list[ViewSpec], ts_col: str = "event_timestamp") -> pa.Table:
    """For each view, the timestamp of the source row the join picks per entity row (null: none), as
    ``<view>__feature_timestamp`` columns in entity order. Reads only keys and timestamps (leakage checks)."""
    table = entity if isinstance(entity, pa.Table) else pa.Table.from_pandas(entity, preserve_index=False)
    _validate(table, specs, ts_col)
    bare = [ViewSpec(s.name, s.path, s.join_keys, (), s.timestamp_field, s.ttl, s.field_mapping) for s in specs]
    parts = _join_views(table, bare, ts_col, with_timestamp=True)
    return pa.table({f"{spec.name}__feature_timestamp": cols[-1] for spec, cols in zip(specs, parts, strict=True)})


def _join_view(
    table: pa.Table, src: _Source, ts_col: str, with_timestamp: bool = False, e_order: np.ndarray | None = None
) -> list[pa.Array]:
    """The feature columns of one view, aligned with the entity rows (and, ``with_timestamp``, the
    picked rows' timestamps last). ``e_order``: the entity rows' time order (the same for every view).

    Two passes over the source: its key and timestamp columns (which rows to pick), then its feature
    columns batch by batch, each batch's picked rows taken as it is decoded: the feature columns are
    never held whole (a fraction of the memory, and of the fresh pages the allocator must fault in)."""
    ts_type = table.schema.field(ts_col).type
    spec = src.spec
    key, ts = spec.join_keys[0], spec.timestamp_field
    key_col, ts_col_src = src.read([key, ts])
    src_ts_type = ts_col_src.type
    unit = "ns" if "ns" in (ts_type.unit, getattr(src_ts_type, "unit", "us")) else "us"
    f_keys, fk_ok = _key_ints(key_col)
    f_ts, ft_ok = _time_ints(ts_col_src, unit)
    e_keys, ek_ok = _key_ints(table.column(spec.join_keys[0]))
    e_ts, et_ok = _time_ints(table.column(ts_col), unit)
    keep = fk_ok & ft_ok
    rows = np.flatnonzero(keep) if not keep.all() else None
    if rows is not None:
        f_keys, f_ts = f_keys[rows], f_ts[rows]
    ttl = None
    if spec.ttl is not None and spec.ttl.total_seconds() > 0:
        ttl = (spec.ttl // timedelta(microseconds=1)) * (1000 if unit == "ns" else 1)
    idx = asof_indices(f_keys, f_ts, e_keys, e_ts, ttl, e_order)
    idx[~(ek_ok & et_ok)] = -1
    if rows is not None:
        idx = np.where(idx >= 0, rows[np.maximum(idx, 0)], -1)
    take = _Take(idx)
    n_rows = len(key_col)
    out = []
    if spec.features:
        feats = list(spec.features)
        parts: list[list[pa.Array]] = [[] for _ in feats]
        start = 0
        for rg in src.row_groups():
            columns = src.read(feats, rg)
            stop = start + len(columns[0])
            local = take.rows(start, stop)
            start = stop
            for part, col in zip(parts, columns, strict=True):
                part.extend(col.take(local).chunks)
        if start != n_rows:
            raise RuntimeError(f"source of feature view {spec.name!r} changed while it was read ({spec.path})")
        out = [take.finish(part, src.type(f)) for part, f in zip(parts, feats, strict=True)]
    if with_timestamp:
        out.append(take.finish(ts_col_src.take(take.rows(0, n_rows)).chunks, src_ts_type))
    return out


class _Take:
    """Takes rows ``idx`` (-1: null) of a source read in consecutive pieces.

    The picked rows are visited in row order (``rows(start, stop)``: the picked rows in one piece, as
    offsets in it; consecutive pieces must be asked for in order), then :meth:`finish` puts the values
    taken from all pieces back in entity order, with nulls where ``idx`` is -1."""

    def __init__(self, idx: np.ndarray) -> None:
        missing = idx < 0
        safe = np.where(missing, 0, idx)
        order = np.argsort(safe)
        self.sorted = safe[order]
        inverse = np.empty(len(idx), dtype=np.int64)
        inverse[order] = np.arange(len(idx), dtype=np.int64)
        self.inverse = pa.array(inverse, mask=missing if missing.any() else None)

    def rows(self, start: int, stop: int) -> pa.Array:
        a, b = np.searchsorted(self.sorted, [start, stop])
        return pa.array(self.sorted[a:b] - start)

    def finish(self, parts: list[pa.Array], type_: pa.DataType) -> pa.Array:
        values = pa.concat_arrays([p.cast(type_) for p in parts]) if parts else pa.array([], type_)
        return values.take(self.inverse)


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
