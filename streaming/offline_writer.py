"""Offline writes: feature rows appended to the view's Parquet folder, one file per (job, batch).

A replayed batch overwrites its own file (atomic rename), so the folder never holds a batch twice.
Timestamps are written as timestamp[us, UTC] (Spark cannot read ns).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from streaming.aggregates import TS, to_feature_frame
from streaming.feature_specs import ViewSpec


def arrow_schema(spec: ViewSpec) -> pa.Schema:
    fields = [pa.field(spec.join_key, pa.int64(), nullable=False), pa.field(TS, pa.timestamp("us", tz="UTC"))]
    fields += [pa.field(a.name, pa.int64() if a.is_int else pa.float64()) for a in spec.aggs]
    return pa.schema(fields)


def write_offline(spec: ViewSpec, rows, file_stem: str, folder: str | Path | None = None) -> Path | None:
    """Write ``rows`` (event_timestamp in us) to ``<folder>/<file_stem>.parquet``; None if no rows."""
    if rows is None or len(rows) == 0:
        return None
    out_dir = Path(folder or spec.offline_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = to_feature_frame(rows, spec)
    table = pa.Table.from_pandas(frame, schema=arrow_schema(spec), preserve_index=False)
    path = out_dir / f"{file_stem}.parquet"
    tmp = out_dir / f".{file_stem}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path
