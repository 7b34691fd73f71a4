"""Fast point-in-time join of entity rows against feature-view sources (duckdb ASOF JOIN).

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

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from rtml.errors import UserFacingError

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


def _parquet_glob(path: str) -> str:
    p = Path(path)
    if p.is_dir():
        return str(p / "**" / "*.parquet")
    return str(p)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _view_subquery(i: int, spec: ViewSpec) -> str:
    inverse = {v: k for k, v in spec.field_mapping.items()}
    cols = [f"{_q(inverse.get(k, k))} AS __k{i}_{j}" for j, k in enumerate(spec.join_keys)]
    cols.append(f"CAST({_q(spec.timestamp_field)} AS TIMESTAMPTZ) AS __ts{i}")
    cols += [f"{_q(inverse.get(f, f))} AS __f{i}_{j}" for j, f in enumerate(spec.features)]
    src = _parquet_glob(spec.path).replace("'", "''")
    return f"(SELECT {', '.join(cols)} FROM read_parquet('{src}', union_by_name=true))"


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
    threads: int | None = None,
    memory_limit: str | None = None,
) -> pa.Table:
    """Entity rows (in order) + the point-in-time features of every view in ``specs``, as Arrow."""
    import duckdb

    table = entity if isinstance(entity, pa.Table) else pa.Table.from_pandas(entity, preserve_index=False)
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
    entity_cols = list(table.column_names)
    table = table.append_column(ROW_ID, pa.array(range(table.num_rows), pa.int64()))
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone='UTC'")
        if threads:
            con.execute(f"SET threads={int(threads)}")
        if memory_limit:
            con.execute(f"SET memory_limit='{memory_limit}'")
        con.register("entity", table)
        out = con.execute(build_query(specs, ts_col, entity_cols)).to_arrow_table()
    finally:
        con.close()
    if out.num_rows != table.num_rows:
        raise RuntimeError(f"point-in-time join returned {out.num_rows} rows for {table.num_rows} entity rows")
    # duckdb hands back TIMESTAMPTZ in the session zone; keep the entity's exact type
    idx = out.column_names.index(ts_col)
    return out.set_column(idx, ts_col, out.column(ts_col).cast(ts_type))


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
