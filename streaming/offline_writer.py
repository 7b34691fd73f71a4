"""Offline writes: feature rows appended to the view's Parquet folder, one file per (job, batch).

A replayed batch overwrites its own file, so the folder never holds a batch twice: locally through a
temporary file and an atomic rename; on S3 (no rename) as one object under the same deterministic name,
which appears only when its upload completes (:mod:`core.storage`).
Timestamps are written as timestamp[us, UTC] (Spark cannot read ns).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from core.storage import location
from streaming.aggregates import TS, to_feature_frame
from streaming.feature_specs import ViewSpec


def arrow_schema(spec: ViewSpec) -> pa.Schema:
    key = pa.string() if spec.string_key else pa.int64()
    fields = [pa.field(spec.join_key, key, nullable=False), pa.field(TS, pa.timestamp("us", tz="UTC"))]
    fields += [pa.field(a.name, pa.int64() if a.is_int else pa.float64()) for a in spec.aggs]
    return pa.schema(fields)


def write_offline(spec: ViewSpec, rows, file_stem: str, folder: str | Path | None = None) -> str | None:
    """Write ``rows`` (event_timestamp in us) to ``<folder>/<file_stem>.parquet``; its path/URL, None if no rows."""
    if rows is None or len(rows) == 0:
        return None
    frame = to_feature_frame(rows, spec)
    table = pa.Table.from_pandas(frame, schema=arrow_schema(spec), preserve_index=False)
    target = location(folder or spec.offline_path) / f"{file_stem}.parquet"
    target.write_table(table)
    return target.uri
